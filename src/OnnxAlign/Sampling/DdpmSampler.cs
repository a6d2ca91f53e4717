using System.Numerics.Tensors;
using OnnxAlign.Model;

namespace OnnxAlign.Sampling;

/// <summary>
/// Ancestral DDPM (Ho et al. 2020, eqs. 6–7), step for step as diffusers' <c>DDPMScheduler</c>: the posterior mean
/// μ̃_t = c0·x̂0 + c_t·x_t with c0 = √ᾱ_{t'}·β_t/(1 − ᾱ_t), c_t = √α_t·(1 − ᾱ_{t'})/(1 − ᾱ_t), plus noise of the
/// configured variance while t &gt; 0 (t' is the next visited timestep, ᾱ = 1 after the last).
/// </summary>
public sealed class DdpmSampler : Sampler
{
    private readonly int[] _timesteps;

    /// <summary>A DDPM sampler over <paramref name="steps"/> timesteps of the config's spacing.</summary>
    public DdpmSampler(SchedulerConfig config, int steps) : base(config, SchedulerConfig.DdpmClass, steps) =>
        _timesteps = Schedule.Timesteps(steps);

    /// <inheritdoc/>
    public override string Name => "ddpm";

    /// <inheritdoc/>
    public override IReadOnlyList<int> Timesteps => _timesteps;

    /// <inheritdoc/>
    public override void Sample(IDenoiser denoiser, Span<float> x, int batchSize, IReadOnlyList<NoiseStream> noise, Action<int>? onStep = null)
    {
        CheckBatch(denoiser, x, batchSize, noise);
        var epsilon = new float[x.Length];
        var x0 = new float[x.Length];
        var z = new float[x.Length];
        var alphasCumprod = Schedule.AlphasCumprod;
        for (int i = 0; i < _timesteps.Length; i++)
        {
            int t = _timesteps[i];
            int prevT = i + 1 < _timesteps.Length ? _timesteps[i + 1] : -1;
            double alphaBarT = alphasCumprod[t];
            double alphaBarPrev = prevT >= 0 ? alphasCumprod[prevT] : 1.0;
            double currentAlphaT = alphaBarT / alphaBarPrev;
            double currentBetaT = 1 - currentAlphaT;

            denoiser.PredictNoise(x, batchSize, t, epsilon);
            PredictedOriginal(x, epsilon, alphaBarT, x0);

            double c0 = Math.Sqrt(alphaBarPrev) * currentBetaT / (1 - alphaBarT);
            double ct = Math.Sqrt(currentAlphaT) * (1 - alphaBarPrev) / (1 - alphaBarT);
            TensorPrimitives.Multiply(x, (float)ct, x);
            TensorPrimitives.MultiplyAdd(x0, (float)c0, x, x);

            if (t > 0)
            {
                double variance = Config.VarianceType switch
                {
                    VarianceType.FixedSmall or VarianceType.FixedSmallLog =>
                        Math.Max((1 - alphaBarPrev) / (1 - alphaBarT) * currentBetaT, 1e-20),
                    _ => currentBetaT,
                };
                DrawNoise(noise, z);
                TensorPrimitives.MultiplyAdd(z, (float)Math.Sqrt(variance), x, x);
            }
            onStep?.Invoke(i + 1);
        }
    }
}
