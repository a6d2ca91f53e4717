using System.Numerics.Tensors;
using OnnxAlign.Core;
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
    public override void Advance(int index, ReadOnlySpan<float> epsilon, Span<float> x, Span<float> denoised, SamplerState state)
    {
        var (alphaBarT, alphaBarPrev) = AlphaBars(index);
        double currentAlphaT = alphaBarT / alphaBarPrev;
        double currentBetaT = 1 - currentAlphaT;
        PredictedOriginal(x, epsilon, alphaBarT, denoised);
        // μ̃_t = c0·x̂0 + c_t·x_t
        double c0 = Math.Sqrt(alphaBarPrev) * currentBetaT / (1 - alphaBarT);
        double ct = Math.Sqrt(currentAlphaT) * (1 - alphaBarPrev) / (1 - alphaBarT);
        TensorPrimitives.Multiply(x, (float)ct, x);
        TensorPrimitives.MultiplyAdd(denoised, (float)c0, x, x);
    }

    /// <inheritdoc/>
    public override double NoiseScale(int index)
    {
        if (_timesteps[index] == 0) return 0;
        var (alphaBarT, alphaBarPrev) = AlphaBars(index);
        double currentBetaT = 1 - alphaBarT / alphaBarPrev;
        double variance = Config.VarianceType switch
        {
            VarianceType.FixedSmall or VarianceType.FixedSmallLog =>
                Math.Max((1 - alphaBarPrev) / (1 - alphaBarT) * currentBetaT, 1e-20),
            _ => currentBetaT,
        };
        return Math.Sqrt(variance);
    }

    // ᾱ_t and ᾱ_{t'} of step i (t' the next visited timestep; ᾱ = 1 after the last).
    private (double AlphaBarT, double AlphaBarPrev) AlphaBars(int index)
    {
        var alphasCumprod = Schedule.AlphasCumprod;
        int prevT = index + 1 < _timesteps.Length ? _timesteps[index + 1] : -1;
        return (alphasCumprod[_timesteps[index]], prevT >= 0 ? alphasCumprod[prevT] : 1.0);
    }
}
