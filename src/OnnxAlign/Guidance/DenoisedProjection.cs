using OnnxAlign.Model;

namespace OnnxAlign.Guidance;

/// <summary>
/// The robust form of guidance on a trained network (DESIGN §1d): the denoiser's x̂0 = (x − σ ε̂)/α is projected onto
/// the data range and ε̂ recomputed from it, ε̂ = (x − α x̂0)/σ, so that every sampler steps with a consistent
/// (x̂0, ε̂) pair (diffusers' <c>use_clipped_model_output=True</c>). The true D(x) = E[x0 | x_t] lies in the data's
/// convex hull, so the projection never moves the true value; it removes what a network extrapolates outside it.
/// Decorates any denoiser: <c>new DenoisedProjection(new LinearTilt(base, θ), range)</c> is the projected tilt, and
/// <c>new DenoisedProjection(base, range)</c> the base law that tilts are compared with (θ = 0 of the same family).
/// Thread-safe if the inner denoiser is.
/// </summary>
public sealed class DenoisedProjection : IDenoiser
{
    private readonly IDenoiser _inner;
    private long _projected;
    private long _values;

    /// <summary>Projects <paramref name="inner"/>'s x̂0 onto <paramref name="range"/>.</summary>
    public DenoisedProjection(IDenoiser inner, DataRange range)
    {
        _inner = inner;
        Range = range.Validated("data range");
    }

    /// <summary>The data range.</summary>
    public DataRange Range { get; }

    /// <summary>The decorated denoiser.</summary>
    public IDenoiser Inner => _inner;

    /// <summary>Fraction of x̂0 values that lay outside the range and were projected, over all calls so far.</summary>
    public double ProjectedFraction
    {
        get { long n = Interlocked.Read(ref _values); return n == 0 ? 0 : (double)Interlocked.Read(ref _projected) / n; }
    }

    /// <inheritdoc/>
    public IReadOnlyList<int> SampleShape => _inner.SampleShape;

    /// <inheritdoc/>
    public int SampleSize => _inner.SampleSize;

    /// <inheritdoc/>
    public NoiseSchedule Schedule => _inner.Schedule;

    /// <inheritdoc/>
    public void PredictNoise(ReadOnlySpan<float> x, int batchSize, double timestep, Span<float> noise)
    {
        _inner.PredictNoise(x, batchSize, timestep, noise);
        var (alpha, sigma) = Schedule.AlphaSigma(timestep);
        long projected = Project(x, noise, alpha, sigma, Range);
        Interlocked.Add(ref _projected, projected);
        Interlocked.Add(ref _values, x.Length);
    }

    /// <summary>
    /// In place: where x̂0 = (x − σ ε̂)/α leaves [low, high], sets x̂0 to the nearest bound and ε̂ = (x − α x̂0)/σ; other
    /// values are left bit for bit. Returns how many values were projected.
    /// </summary>
    public static long Project(ReadOnlySpan<float> x, Span<float> noise, double alpha, double sigma, DataRange range)
    {
        if (x.Length != noise.Length) throw new ArgumentException("x and ε̂ differ in length", nameof(noise));
        long count = 0;
        double inverseSigma = 1 / sigma;
        for (int i = 0; i < x.Length; i++)
        {
            double denoised = (x[i] - sigma * noise[i]) / alpha;
            if (denoised > range.High) { noise[i] = (float)((x[i] - alpha * range.High) * inverseSigma); count++; }
            else if (denoised < range.Low) { noise[i] = (float)((x[i] - alpha * range.Low) * inverseSigma); count++; }
        }
        return count;
    }
}
