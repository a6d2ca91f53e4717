using System.Numerics.Tensors;
using OnnxAlign.Core;
using OnnxAlign.Model;

namespace OnnxAlign.Guidance;

/// <summary>Evaluates a noise-prediction network on a batch: writes ε̂(x, t) for the step the caller is at.</summary>
public delegate void NoiseNetwork(ReadOnlySpan<float> x, Span<float> noise);

/// <summary>How the tilt evaluates the network on steps where the shift is large (DESIGN §1b).</summary>
public enum TiltMode
{
    /// <summary>Always the exact shifted evaluation ε̂(x + c_t θ) − (σ_t/α_t)θ.</summary>
    Exact,
    /// <summary>The Gaussian surrogate ε̂(x) − σ_t Δ_t where c_t‖θ‖ exceeds the trust radius × the sample's ‖x_t‖.</summary>
    Hybrid,
}

/// <summary>
/// The exact linear exponential tilt q ∝ p·exp(⟨θ, x⟩) as a decorator of the denoiser (DESIGN §1):
/// ε^q(x, t) = ε̂(x + c_t θ, t) − (σ_t/α_t)·θ with c_t = σ_t²/α_t, so D^q(x) = D(x + c_t θ). One network evaluation
/// per step, no gradients; every sampler works unchanged. θ is one sample's shape and is applied to each sample.
/// </summary>
public sealed class LinearTilt : IDenoiser
{
    private readonly IDenoiser _inner;
    private readonly float[] _theta;
    private readonly Func<double, double, double> _shiftCoefficient;
    private readonly object _gate = new();
    private float[] _shifted = [];
    private bool[] _surrogateRows = [];
    private double _maxShiftRatio;

    /// <summary>Tilts <paramref name="inner"/> by θ (one sample's worth of values).</summary>
    public LinearTilt(IDenoiser inner, ReadOnlySpan<float> theta, TiltMode mode = TiltMode.Exact, HybridSurrogate? surrogate = null)
        : this(inner, theta, mode, surrogate, (alpha, sigma) => sigma * sigma / alpha) { }

    /// <summary>For tests: a tilt with another shift coefficient c(α, σ) (a wrong one must fail the exactness tests).</summary>
    internal LinearTilt(IDenoiser inner, ReadOnlySpan<float> theta, TiltMode mode, HybridSurrogate? surrogate, Func<double, double, double> shiftCoefficient)
    {
        if (theta.Length != inner.SampleSize)
            throw new ArgumentException($"θ has {theta.Length} values, the model's samples have {inner.SampleSize}", nameof(theta));
        if (mode == TiltMode.Hybrid && surrogate is null)
            throw new ArgumentException("hybrid mode needs the data moments of the surrogate", nameof(surrogate));
        _inner = inner;
        _theta = theta.ToArray();
        ThetaNorm = TensorPrimitives.Norm(_theta);
        Mode = mode;
        Surrogate = surrogate;
        _shiftCoefficient = shiftCoefficient;
    }

    /// <summary>θ.</summary>
    public ReadOnlySpan<float> Theta => _theta;

    /// <summary>‖θ‖.</summary>
    public double ThetaNorm { get; }

    /// <summary>Exact or hybrid.</summary>
    public TiltMode Mode { get; }

    /// <summary>The surrogate used by <see cref="TiltMode.Hybrid"/>.</summary>
    public HybridSurrogate? Surrogate { get; }

    /// <summary>The largest ‖c_t θ‖ / ‖x_t‖ of any sample met so far: how far outside its inputs the network was asked.</summary>
    public double MaxShiftRatio { get { lock (_gate) return _maxShiftRatio; } }

    /// <summary>Sample-steps (one sample at one step) that used the surrogate instead of the shifted evaluation (hybrid mode): each sample decides by its own ‖x_t‖.</summary>
    public long SurrogateSteps { get; private set; }

    /// <inheritdoc/>
    public IReadOnlyList<int> SampleShape => _inner.SampleShape;

    /// <inheritdoc/>
    public int SampleSize => _inner.SampleSize;

    /// <inheritdoc/>
    public NoiseSchedule Schedule => _inner.Schedule;

    /// <inheritdoc/>
    public void PredictNoise(ReadOnlySpan<float> x, int batchSize, double timestep, Span<float> noise)
    {
        var (alpha, sigma) = Schedule.AlphaSigma(timestep);
        double shift = _shiftCoefficient(alpha, sigma);
        double shiftNorm = shift * ThetaNorm;
        int size = SampleSize;
        if (x.Length != batchSize * size || noise.Length != x.Length)
            throw new ArgumentException($"expected {batchSize} × {size} values");
        lock (_gate)
        {
            if (_shifted.Length < x.Length) _shifted = new float[x.Length];
            var input = _shifted.AsSpan(0, x.Length);
            if (_surrogateRows.Length < batchSize) _surrogateRows = new bool[batchSize];
            // Each sample by itself (never the batch's mean): sample i then depends on nothing but its own path, so
            // batching and sharding leave it unchanged. A hybrid row beyond the trust radius takes the surrogate
            // (the plain ε̂(x)), every other row the shifted input x + c_t θ — all in one network call.
            for (int b = 0; b < batchSize; b++)
            {
                var row = x.Slice(b * size, size);
                double ratio = shiftNorm / Math.Max(TensorPrimitives.Norm(row), 1e-12);
                _maxShiftRatio = Math.Max(_maxShiftRatio, ratio);
                bool surrogate = _surrogateRows[b] = Mode == TiltMode.Hybrid && ratio > Surrogate!.TrustRadius;
                if (surrogate) { row.CopyTo(input.Slice(b * size, size)); SurrogateSteps++; }
                else TensorPrimitives.MultiplyAdd(_theta, (float)shift, row, input.Slice(b * size, size));
            }
            _inner.PredictNoise(input, batchSize, timestep, noise);
            // DESIGN §1b: the surrogate's ε^q ≈ ε̂(x) − σ_t Δ_t; the shifted evaluation's ε^q = ε̂(x + c_t θ) − (σ_t/α_t) θ.
            float surrogateCorrection = Mode == TiltMode.Hybrid ? (float)(-sigma * Surrogate!.Coefficient(alpha, sigma)) : 0f;
            float shiftedCorrection = (float)(-sigma / alpha);
            for (int b = 0; b < batchSize; b++)
                TensorPrimitives.MultiplyAdd(_theta, _surrogateRows[b] ? surrogateCorrection : shiftedCorrection,
                                             noise.Slice(b * size, size), noise.Slice(b * size, size));
        }
    }

    /// <summary>
    /// The guidance step for any pipeline with its own loop (DESIGN §1): given x_t, the step's α_t, σ_t and a delegate
    /// that evaluates the (ε-converted) network at the current timestep, writes the tilted ε^q into
    /// <paramref name="guidedNoise"/> and, when asked, the tilted x̂0 = D(x + c_t θ) into <paramref name="denoised"/>.
    /// </summary>
    /// <param name="x">x_t, <paramref name="batchSize"/> samples one after another.</param>
    /// <param name="batchSize">Samples in <paramref name="x"/>.</param>
    /// <param name="theta">θ, one sample's worth of values.</param>
    /// <param name="alpha">α_t = √ᾱ_t of the step.</param>
    /// <param name="sigma">σ_t = √(1 − ᾱ_t) of the step.</param>
    /// <param name="network">Evaluates ε̂ at the step's timestep.</param>
    /// <param name="guidedNoise">Receives ε^q.</param>
    /// <param name="denoised">Optional: receives x̂0 of q.</param>
    /// <param name="range">The data range, when known: the tilted x̂0 is projected onto it and ε^q recomputed from it, so
    /// that your scheduler steps with a consistent pair (DESIGN §1d, <see cref="DenoisedProjection"/>). Pass it on trained networks.</param>
    public static void GuideNoise(ReadOnlySpan<float> x, int batchSize, ReadOnlySpan<float> theta, double alpha, double sigma,
                                  NoiseNetwork network, Span<float> guidedNoise, Span<float> denoised = default, DataRange? range = null)
    {
        // Called once per step of the caller's loop: borrow the shifted-input buffer rather than allocate it.
        var shifted = System.Buffers.ArrayPool<float>.Shared.Rent(x.Length);
        try { Apply(x, batchSize, theta, alpha, sigma, sigma * sigma / alpha, shifted.AsSpan(0, x.Length), guidedNoise, network); }
        finally { System.Buffers.ArrayPool<float>.Shared.Return(shifted); }
        if (range is { } r) DenoisedProjection.Project(x, guidedNoise, alpha, sigma, r);
        if (!denoised.IsEmpty) Prediction.DenoisedFromNoise(x, guidedNoise, alpha, sigma, denoised);
    }

    private static void Apply(ReadOnlySpan<float> x, int batchSize, ReadOnlySpan<float> theta, double alpha, double sigma, double shift,
                              Span<float> shifted, Span<float> noise, NoiseNetwork network)
    {
        int size = theta.Length;
        if (x.Length != batchSize * size || noise.Length != x.Length)
            throw new ArgumentException($"expected {batchSize} × {size} values");
        // x + c_t θ for each sample
        for (int b = 0; b < batchSize; b++)
            TensorPrimitives.MultiplyAdd(theta, (float)shift, x.Slice(b * size, size), shifted.Slice(b * size, size));
        network(shifted, noise);
        // − (σ_t/α_t) θ
        float correction = (float)(-sigma / alpha);
        for (int b = 0; b < batchSize; b++)
            TensorPrimitives.MultiplyAdd(theta, correction, noise.Slice(b * size, size), noise.Slice(b * size, size));
    }
}

/// <summary>
/// The Gaussian surrogate of DESIGN §1b with isotropic data covariance v·I: p_t ≈ N(α m, (α² v + σ²) I), hence the
/// x-independent score correction Δ_t = α v/(α² v + σ²)·θ (→ θ as t → 0).
/// </summary>
/// <param name="DataVariance">v: the per-coordinate variance of the data (mean over coordinates).</param>
/// <param name="TrustRadius">Use the surrogate where c_t‖θ‖ exceeds this multiple of the sample's own ‖x_t‖.</param>
public sealed record HybridSurrogate(double DataVariance, double TrustRadius = 1.0)
{
    /// <summary>Δ_t/θ = α v/(α² v + σ²).</summary>
    public double Coefficient(double alpha, double sigma) => alpha * DataVariance / (alpha * alpha * DataVariance + sigma * sigma);
}
