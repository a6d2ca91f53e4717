using System.Numerics.Tensors;
using OnnxAlign.Core;
using OnnxAlign.Model;

namespace OnnxAlign.Sampling;

/// <summary>
/// DDIM (Song, Meng &amp; Ermon 2021, eq. 12), as diffusers' <c>DDIMScheduler</c>:
/// x_{t'} = √ᾱ_{t'}·x̂0 + √(1 − ᾱ_{t'} − σ_η²)·ε̂ + σ_η·z with σ_η = η·√((1 − ᾱ_{t'})/(1 − ᾱ_t)·(1 − ᾱ_t/ᾱ_{t'})),
/// t' = t − N/n. η = 0 is deterministic; η = 1 has DDPM's posterior variance.
/// </summary>
public sealed class DdimSampler : Sampler
{
    private readonly int[] _timesteps;

    /// <summary>A DDIM sampler with stochasticity η ≥ 0.</summary>
    public DdimSampler(SchedulerConfig config, int steps, double eta) : base(config, SchedulerConfig.DdimClass, steps)
    {
        if (!(eta >= 0) || double.IsInfinity(eta)) throw new ArgumentOutOfRangeException(nameof(eta), eta, "eta must be finite and ≥ 0");
        Eta = eta;
        _timesteps = Schedule.Timesteps(steps);
    }

    /// <summary>η: 0 deterministic, 1 ancestral.</summary>
    public double Eta { get; }

    /// <inheritdoc/>
    public override string Name => "ddim";

    /// <inheritdoc/>
    public override IReadOnlyList<int> Timesteps => _timesteps;

    /// <inheritdoc/>
    public override void Advance(int index, ReadOnlySpan<float> epsilon, Span<float> x, Span<float> denoised, SamplerState state)
    {
        var (alphaBarT, alphaBarPrev) = AlphaBars(index);
        PredictedOriginal(x, epsilon, alphaBarT, denoised);
        double stdDevT = NoiseScale(index);
        double direction = Math.Sqrt(Math.Max(1 - alphaBarPrev - stdDevT * stdDevT, 0));
        // x_{t'} = √ᾱ_{t'}·x̂0 + √(1 − ᾱ_{t'} − σ_η²)·ε̂ (+ σ_η·z)
        TensorPrimitives.Multiply(denoised, (float)Math.Sqrt(alphaBarPrev), x);
        TensorPrimitives.MultiplyAdd(epsilon, (float)direction, x, x);
    }

    /// <inheritdoc/>
    public override double NoiseScale(int index)
    {
        if (Eta == 0) return 0;
        var (alphaBarT, alphaBarPrev) = AlphaBars(index);
        // σ_η = η·√((1 − ᾱ_{t'})/(1 − ᾱ_t)·(1 − ᾱ_t/ᾱ_{t'}))
        return Eta * Math.Sqrt((1 - alphaBarPrev) / (1 - alphaBarT) * (1 - alphaBarT / alphaBarPrev));
    }

    // ᾱ_t and ᾱ_{t'} of step i, t' = t − N/n (ᾱ_{t'} = 1 or ᾱ_0 past the start, by set_alpha_to_one).
    private (double AlphaBarT, double AlphaBarPrev) AlphaBars(int index)
    {
        var alphasCumprod = Schedule.AlphasCumprod;
        int t = _timesteps[index];
        int prevT = t - Schedule.NumTrainTimesteps / Steps;
        double finalAlphaCumprod = Config.SetAlphaToOne ? 1.0 : alphasCumprod[0];
        return (alphasCumprod[t], prevT >= 0 ? alphasCumprod[prevT] : finalAlphaCumprod);
    }
}
