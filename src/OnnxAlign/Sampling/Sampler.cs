using System.Numerics.Tensors;
using OnnxAlign.Model;

namespace OnnxAlign.Sampling;

/// <summary>
/// A reverse-time sampler: one small, immutable class per method, configured like the diffusers scheduler it matches.
/// Stateless between runs, so one instance may serve several threads. All samplers see the network only through
/// <see cref="IDenoiser"/> (ε̂ space), so guidance decorators work with every one of them.
/// </summary>
public abstract class Sampler
{
    /// <summary>Creates a sampler for a config (resolved against <paramref name="className"/>'s defaults) and a step count.</summary>
    protected Sampler(SchedulerConfig config, string className, int steps)
    {
        Config = config.WithDefaultsOf(className);
        Schedule = new NoiseSchedule(Config);
        if (steps < 1 || steps > Schedule.NumTrainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(steps), steps, $"steps must lie in [1, {Schedule.NumTrainTimesteps}]");
        Steps = steps;
    }

    /// <summary>The name used on the command line.</summary>
    public abstract string Name { get; }

    /// <summary>The scheduler config with this sampler's class defaults.</summary>
    public SchedulerConfig Config { get; }

    /// <summary>The schedule of <see cref="Config"/>.</summary>
    public NoiseSchedule Schedule { get; }

    /// <summary>Number of denoising steps (one network evaluation each).</summary>
    public int Steps { get; }

    /// <summary>The training timesteps visited, in order.</summary>
    public abstract IReadOnlyList<int> Timesteps { get; }

    /// <summary>
    /// Runs the reverse process on a batch in place: <paramref name="x"/> holds x_T on entry (sample after sample) and
    /// the final samples on return. <paramref name="noise"/> holds one stream per sample for the per-step noise.
    /// <paramref name="onStep"/> is called after each step with the number of steps done.
    /// </summary>
    public abstract void Sample(IDenoiser denoiser, Span<float> x, int batchSize, IReadOnlyList<NoiseStream> noise, Action<int>? onStep = null);

    /// <summary>Checks that the buffers and the denoiser agree before a run.</summary>
    protected static void CheckBatch(IDenoiser denoiser, Span<float> x, int batchSize, IReadOnlyList<NoiseStream> noise)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize));
        if (x.Length != batchSize * denoiser.SampleSize)
            throw new ArgumentException($"x has {x.Length} values, expected {batchSize} × {denoiser.SampleSize}", nameof(x));
        if (noise.Count != batchSize) throw new ArgumentException($"expected {batchSize} noise streams, got {noise.Count}", nameof(noise));
    }

    /// <summary>Fills z with each sample's next noise from its own stream.</summary>
    protected static void DrawNoise(IReadOnlyList<NoiseStream> noise, Span<float> z)
    {
        int size = z.Length / noise.Count;
        for (int b = 0; b < noise.Count; b++) noise[b].NextGaussian(z.Slice(b * size, size));
    }

    /// <summary>x̂0 = (x − σ·ε̂)/α, clipped to ±clip_sample_range when the config asks (diffusers' DDPM/DDIM).</summary>
    protected void PredictedOriginal(ReadOnlySpan<float> x, ReadOnlySpan<float> epsilon, double alphaBar, Span<float> x0)
    {
        Prediction.DenoisedFromNoise(x, epsilon, Math.Sqrt(alphaBar), Math.Sqrt(1 - alphaBar), x0);
        if (Config.ClipSample)
        {
            float range = (float)Config.ClipSampleRange;
            TensorPrimitives.Min(x0, range, x0);
            TensorPrimitives.Max(x0, -range, x0);
        }
    }

    /// <summary>Creates a sampler by its command-line name.</summary>
    /// <param name="name">ddpm, ddim, euler-maruyama (em) or dpm++2m; null picks the one the config's class names.</param>
    /// <param name="config">The model's scheduler config.</param>
    /// <param name="steps">Number of steps.</param>
    /// <param name="eta">DDIM's η (0 = deterministic); ignored by other samplers.</param>
    public static Sampler Create(string? name, SchedulerConfig config, int steps, double eta = 0.0)
    {
        name ??= config.ClassName switch
        {
            SchedulerConfig.DdpmClass => "ddpm",
            SchedulerConfig.DpmSolverClass => "dpm++2m",
            _ => "ddim",
        };
        return name.ToLowerInvariant() switch
        {
            "ddpm" => new DdpmSampler(config, steps),
            "ddim" => new DdimSampler(config, steps, eta),
            "euler-maruyama" or "em" => new EulerMaruyamaSampler(config, steps),
            "dpm++2m" or "dpmpp2m" or "dpm-solver++" => new DpmSolverPlusPlus2MSampler(config, steps),
            _ => throw new ArgumentException($"unknown sampler '{name}' (expected one of: {string.Join(", ", Names)})", nameof(name)),
        };
    }

    /// <summary>The sampler names <see cref="Create"/> accepts.</summary>
    public static IReadOnlyList<string> Names { get; } = ["ddpm", "ddim", "euler-maruyama", "dpm++2m"];
}
