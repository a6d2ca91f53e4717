using System.Numerics.Tensors;
using OnnxAlign.Core;
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
    /// The per-batch state a step carries to the next one (DPM-Solver++'s previous x̂0); null for one-step methods.
    /// Rows follow the batch's samples, so a resampling step permutes them with the samples.
    /// </summary>
    public virtual SamplerState CreateState(int batchSize, int sampleSize) => new(batchSize, sampleSize, hasHistory: false);

    /// <summary>
    /// One reverse step, loop-free as diffusers' <c>step</c>: given ε̂ of the network at x_{t_i} (the
    /// <paramref name="index"/>-th visited timestep, <see cref="Timesteps"/>), moves <paramref name="x"/> in place to
    /// the next visited noise level and writes the step's x̂0 into <paramref name="denoised"/> (what diffusers calls
    /// <c>pred_original_sample</c>). Buffers hold the batch sample after sample; <paramref name="noise"/> has one
    /// stream per sample. Stateless apart from <paramref name="state"/>, so one sampler may serve several threads.
    /// Every step is x_{i+1} = m_i(x_i, ε̂) + s_i·z (<see cref="Advance"/>, then <see cref="NoiseScale"/>).
    /// </summary>
    public void Step(int index, ReadOnlySpan<float> epsilon, Span<float> x, Span<float> denoised, SamplerState state,
                     IReadOnlyList<NoiseStream> noise)
    {
        Advance(index, epsilon, x, denoised, state);
        double scale = NoiseScale(index);
        if (scale > 0) AddNoise(noise, x, scale);
    }

    /// <summary>
    /// The deterministic part of step <paramref name="index"/>: x ← m_i(x, ε̂), the mean of the step's Gaussian
    /// transition (its whole result for a deterministic sampler); writes x̂0 into <paramref name="denoised"/>.
    /// </summary>
    public abstract void Advance(int index, ReadOnlySpan<float> epsilon, Span<float> x, Span<float> denoised, SamplerState state);

    /// <summary>s_i, the standard deviation of the noise step <paramref name="index"/> adds (0 for a deterministic step).
    /// The transition x_{i+1} | x_i is N(m_i, s_i² I): what exact path weights (DESIGN §1d) are computed from.</summary>
    public abstract double NoiseScale(int index);

    /// <summary>True when some step draws noise (DDPM, Euler–Maruyama, DDIM with η &gt; 0): copies of one particle
    /// then separate, which resampling schemes (twisted SMC, DESIGN §8) need.</summary>
    public bool IsStochastic => Enumerable.Range(0, Steps).Any(i => NoiseScale(i) > 0);

    /// <summary>
    /// Runs the reverse process on a batch in place: <paramref name="x"/> holds x_T on entry (sample after sample) and
    /// the final samples on return. <paramref name="noise"/> holds one stream per sample for the per-step noise. This
    /// is the one loop of every sampler: ε̂ = network(x_t, t), then <see cref="Step"/>. <paramref name="observer"/>
    /// sees x and x̂0 after each step and may resample the batch (it returns the ancestor of each row).
    /// </summary>
    public void Sample(IDenoiser denoiser, Span<float> x, int batchSize, IList<NoiseStream> noise, IStepObserver? observer = null)
    {
        CheckBatch(denoiser, x, batchSize, noise);
        int size = denoiser.SampleSize;
        var epsilon = new float[x.Length];
        var denoised = new float[x.Length];
        var state = CreateState(batchSize, size);
        var timesteps = Timesteps;
        for (int i = 0; i < timesteps.Count; i++)
        {
            denoiser.PredictNoise(x, batchSize, timesteps[i], epsilon);
            Step(i, epsilon, x, denoised, state, (IReadOnlyList<NoiseStream>)noise);
            if (observer?.AfterStep(i + 1, x, denoised, batchSize) is { } ancestors)
                Resample(ancestors, x, size, state, noise);
        }
    }

    /// <summary>
    /// Replaces row b of the batch by row ancestors[b] (samples and sampler state). A copy continues on its own noise:
    /// its stream is split from the ancestor's by the row index, so copies separate and the run stays reproducible.
    /// </summary>
    private static void Resample(IReadOnlyList<int> ancestors, Span<float> x, int size, SamplerState state, IList<NoiseStream> noise)
    {
        int batch = noise.Count;
        if (ancestors.Count != batch) throw new ArgumentException($"expected {batch} ancestors, got {ancestors.Count}", nameof(ancestors));
        var copy = x.ToArray();
        var streams = new NoiseStream[batch];
        for (int b = 0; b < batch; b++)
        {
            int a = ancestors[b];
            if ((uint)a >= (uint)batch) throw new ArgumentOutOfRangeException(nameof(ancestors), a, $"ancestor must lie in [0, {batch})");
            copy.AsSpan(a * size, size).CopyTo(x.Slice(b * size, size));
            streams[b] = noise[a].Split(b);
        }
        for (int b = 0; b < batch; b++) noise[b] = streams[b];
        state.Permute(ancestors);
    }

    /// <summary>Checks that the buffers and the denoiser agree before a run.</summary>
    protected static void CheckBatch(IDenoiser denoiser, Span<float> x, int batchSize, ICollection<NoiseStream> noise)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize));
        if (x.Length != batchSize * denoiser.SampleSize)
            throw new ArgumentException($"x has {x.Length} values, expected {batchSize} × {denoiser.SampleSize}", nameof(x));
        if (noise.Count != batchSize) throw new ArgumentException($"expected {batchSize} noise streams, got {noise.Count}", nameof(noise));
    }

    /// <summary>Adds scale·z to each sample, z drawn from that sample's own stream.</summary>
    protected static void AddNoise(IReadOnlyList<NoiseStream> noise, Span<float> x, double scale)
    {
        int size = x.Length / noise.Count;
        var z = System.Buffers.ArrayPool<float>.Shared.Rent(size);
        try
        {
            var row = z.AsSpan(0, size);
            for (int b = 0; b < noise.Count; b++)
            {
                noise[b].NextGaussian(row);
                var target = x.Slice(b * size, size);
                TensorPrimitives.MultiplyAdd(row, (float)scale, target, target);
            }
        }
        finally { System.Buffers.ArrayPool<float>.Shared.Return(z); }
    }

    /// <summary>x̂0 = (x − σ·ε̂)/α, clipped to ±clip_sample_range when the config asks (diffusers' DDPM/DDIM).</summary>
    protected void PredictedOriginal(ReadOnlySpan<float> x, ReadOnlySpan<float> epsilon, double alphaBar, Span<float> x0)
    {
        Prediction.DenoisedFromNoise(x, epsilon, Math.Sqrt(alphaBar), Math.Sqrt(1 - alphaBar), x0);
        if (Config.ClipSample)
        {
            float range = (float)Config.ClipSampleRange;
            for (int i = 0; i < x0.Length; i++) x0[i] = Math.Clamp(x0[i], -range, range);
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
