using System.Numerics.Tensors;
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
    public override void Sample(IDenoiser denoiser, Span<float> x, int batchSize, IReadOnlyList<NoiseStream> noise, Action<int>? onStep = null)
    {
        CheckBatch(denoiser, x, batchSize, noise);
        var epsilon = new float[x.Length];
        var z = new float[x.Length];
        var alphasCumprod = Schedule.AlphasCumprod;
        for (int i = 0; i < _timesteps.Length; i++)
        {
            int t = _timesteps[i];
            bool last = i + 1 == _timesteps.Length;
            double alphaBarT = alphasCumprod[t];
            double alphaBarPrev = last ? 1.0 : alphasCumprod[_timesteps[i + 1]];
            double deltaTau = Math.Log(alphaBarPrev / alphaBarT);
            double sigmaT = Math.Sqrt(1 - alphaBarT);

            denoiser.PredictNoise(x, batchSize, t, epsilon);
            // x ← (1 + Δτ/2)·x − (Δτ/σ_t)·ε̂ [+ √Δτ·z]
            TensorPrimitives.Multiply(x, (float)(1 + deltaTau / 2), x);
            TensorPrimitives.MultiplyAdd(epsilon, (float)(-deltaTau / sigmaT), x, x);
            if (!last)
            {
                DrawNoise(noise, z);
                TensorPrimitives.MultiplyAdd(z, (float)Math.Sqrt(deltaTau), x, x);
            }
            onStep?.Invoke(i + 1);
        }
    }
}
