using System.Numerics.Tensors;
using OnnxAlign.Core;
using OnnxAlign.Model;

namespace OnnxAlign.Sampling;

/// <summary>
/// DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), as diffusers' <c>DPMSolverMultistepScheduler</c> with
/// <c>algorithm_type="dpmsolver++"</c>, order 2. With λ = log(α/σ), h = λ_{t'} − λ_t and D the x̂0 predictions:
/// first order x_{t'} = (σ_{t'}/σ_t)·x − α_{t'}(e^{−h} − 1)·D0; second order adds the multistep correction from
/// D1 = (D0 − D_prev)/r0, r0 = h_prev/h (midpoint: −½α_{t'}(e^{−h} − 1)·D1; heun: α_{t'}((e^{−h} − 1)/h + 1)·D1).
/// </summary>
public sealed class DpmSolverPlusPlus2MSampler : Sampler
{
    private readonly int[] _timesteps;
    private readonly double[] _alphas;
    private readonly double[] _sigmas;

    /// <summary>A DPM-Solver++(2M) sampler over <paramref name="steps"/> timesteps.</summary>
    public DpmSolverPlusPlus2MSampler(SchedulerConfig config, int steps) : base(config, SchedulerConfig.DpmSolverClass, steps)
    {
        _timesteps = Schedule.MultistepTimesteps(steps);
        // diffusers works with the VE sigma ς = σ/α; the VP pair is α = 1/√(ς² + 1), σ = ς·α.
        var alphasCumprod = Schedule.AlphasCumprod;
        double finalVeSigma = Config.FinalSigmasType == "zero" ? 0.0 : Math.Sqrt((1 - alphasCumprod[0]) / alphasCumprod[0]);
        _alphas = new double[steps + 1];
        _sigmas = new double[steps + 1];
        for (int i = 0; i <= steps; i++)
        {
            double veSigma = i < steps ? Math.Sqrt((1 - alphasCumprod[_timesteps[i]]) / alphasCumprod[_timesteps[i]]) : finalVeSigma;
            _alphas[i] = 1 / Math.Sqrt(veSigma * veSigma + 1);
            _sigmas[i] = veSigma * _alphas[i];
        }
    }

    /// <inheritdoc/>
    public override string Name => "dpm++2m";

    /// <inheritdoc/>
    public override IReadOnlyList<int> Timesteps => _timesteps;

    private bool IsHeun => Config.SolverType == "heun";

    private double Lambda(int i) => Math.Log(_alphas[i]) - Math.Log(_sigmas[i]);

    /// <inheritdoc/>
    public override double NoiseScale(int index) => 0;

    /// <inheritdoc/>
    public override SamplerState CreateState(int batchSize, int sampleSize) => new(batchSize, sampleSize, hasHistory: true);

    /// <inheritdoc/>
    public override void Advance(int index, ReadOnlySpan<float> epsilon, Span<float> x, Span<float> denoised, SamplerState state)
    {
        int i = index, n = _timesteps.Length;
        // D0: this step's x̂0; the state holds the previous step's (D_prev).
        Prediction.DenoisedFromNoise(x, epsilon, _alphas[i], _sigmas[i], denoised);
        var dPrev = state.History;

        bool lowerOrderFinal = i == n - 1 &&
            (Config.EulerAtFinal || (Config.LowerOrderFinal && n < 15) || Config.FinalSigmasType == "zero");
        double h = Lambda(i + 1) - Lambda(i);
        double expm = Math.Exp(-h) - 1;         // e^{−h} − 1; −1 when the last sigma is 0 (h = ∞)
        double alphaNext = _alphas[i + 1];
        double sigmaRatio = _sigmas[i + 1] / _sigmas[i];

        TensorPrimitives.Multiply(x, (float)sigmaRatio, x);
        TensorPrimitives.MultiplyAdd(denoised, (float)(-alphaNext * expm), x, x);
        if (i > 0 && !lowerOrderFinal)
        {
            double r0 = (Lambda(i) - Lambda(i - 1)) / h;
            double d1Coefficient = IsHeun ? alphaNext * (expm / h + 1) : -0.5 * alphaNext * expm;
            // + coefficient · D1, D1 = (D0 − D_prev)/r0
            float c = (float)(d1Coefficient / r0);
            TensorPrimitives.MultiplyAdd(denoised, c, x, x);
            TensorPrimitives.MultiplyAdd(dPrev, -c, x, x);
        }
        denoised.CopyTo(dPrev);
    }
}
