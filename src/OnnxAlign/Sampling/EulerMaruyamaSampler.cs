using System.Numerics.Tensors;
using OnnxAlign.Core;
using OnnxAlign.Model;

namespace OnnxAlign.Sampling;

/// <summary>
/// Euler–Maruyama on the reverse VP SDE (Song et al. 2021). In the clock τ = −log ᾱ the forward SDE is
/// dx = −½x dτ + dW, so the reverse step from t to t' with Δτ = log(ᾱ_{t'}/ᾱ_t) is
/// x ← x + (½x + s_t(x))·Δτ + √Δτ·z, s_t = −ε̂/σ_t. The last step (to ᾱ = 1) adds no noise.
/// Timesteps follow the config's spacing, as DDPM's do.
/// </summary>
public sealed class EulerMaruyamaSampler : Sampler
{
    private readonly int[] _timesteps;

    /// <summary>An Euler–Maruyama sampler over <paramref name="steps"/> timesteps.</summary>
    public EulerMaruyamaSampler(SchedulerConfig config, int steps) : base(config, SchedulerConfig.DdpmClass, steps) =>
        _timesteps = Schedule.Timesteps(steps);

    /// <inheritdoc/>
    public override string Name => "euler-maruyama";

    /// <inheritdoc/>
    public override IReadOnlyList<int> Timesteps => _timesteps;

    /// <inheritdoc/>
    public override void Advance(int index, ReadOnlySpan<float> epsilon, Span<float> x, Span<float> denoised, SamplerState state)
    {
        double alphaBarT = Schedule.AlphasCumprod[_timesteps[index]];
        double deltaTau = DeltaTau(index);
        double sigmaT = Math.Sqrt(1 - alphaBarT);
        Prediction.DenoisedFromNoise(x, epsilon, Math.Sqrt(alphaBarT), sigmaT, denoised);
        // x ← (1 + Δτ/2)·x − (Δτ/σ_t)·ε̂ (+ √Δτ·z)
        TensorPrimitives.Multiply(x, (float)(1 + deltaTau / 2), x);
        TensorPrimitives.MultiplyAdd(epsilon, (float)(-deltaTau / sigmaT), x, x);
    }

    /// <inheritdoc/>
    public override double NoiseScale(int index) => index + 1 == _timesteps.Length ? 0 : Math.Sqrt(DeltaTau(index));

    // Δτ = log(ᾱ_{t'}/ᾱ_t), ᾱ_{t'} = 1 after the last step.
    private double DeltaTau(int index)
    {
        var alphasCumprod = Schedule.AlphasCumprod;
        double alphaBarPrev = index + 1 == _timesteps.Length ? 1.0 : alphasCumprod[_timesteps[index + 1]];
        return Math.Log(alphaBarPrev / alphasCumprod[_timesteps[index]]);
    }
}
