using System.Diagnostics;
using OnnxAlign.Model;

namespace OnnxAlign.Sampling;

/// <summary>Counts network evaluations (per sample) and the time spent in the wrapped denoiser, for reports.</summary>
public sealed class MeteredDenoiser(IDenoiser inner) : IDenoiser
{
    private long _evaluations;
    private long _ticks;

    /// <inheritdoc/>
    public IReadOnlyList<int> SampleShape => inner.SampleShape;

    /// <inheritdoc/>
    public int SampleSize => inner.SampleSize;

    /// <inheritdoc/>
    public NoiseSchedule Schedule => inner.Schedule;

    /// <summary>Sample-evaluations so far (a batch of B counts B).</summary>
    public long Evaluations => Interlocked.Read(ref _evaluations);

    /// <summary>Time spent inside the wrapped denoiser.</summary>
    public TimeSpan Elapsed => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _ticks));

    /// <inheritdoc/>
    public void PredictNoise(ReadOnlySpan<float> x, int batchSize, double timestep, Span<float> noise)
    {
        // Between network calls, whatever the wrapped denoiser: a cancelled run makes no further call.
        NetworkCancellation.Current.ThrowIfCancellationRequested();
        long start = Stopwatch.GetTimestamp();
        inner.PredictNoise(x, batchSize, timestep, noise);
        Interlocked.Add(ref _ticks, Stopwatch.GetTimestamp() - start);
        Interlocked.Add(ref _evaluations, batchSize);
    }
}
