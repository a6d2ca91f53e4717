using System.Diagnostics;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment.Prox;

/// <summary>The prox stage applied to a batch: transported samples and what happened to each.</summary>
public sealed record ProxBatch(float[] Samples, ProxResult[] Results, TimeSpan Time)
{
    /// <summary>Samples processed per second of wall time.</summary>
    public double SamplesPerSecond => Results.Length / Math.Max(Time.TotalSeconds, 1e-9);

    /// <summary>The largest certified gap of the batch.</summary>
    public double MaxGap => Results.Length == 0 ? 0 : Results.Max(r => r.CertifiedGap);

    /// <summary>Samples whose value box was active.</summary>
    public int BoxActiveCount => Results.Count(r => r.BoxActive);
}

/// <summary>
/// The Wasserstein alignment stage (DESIGN §3): pushes every sample x of a batch through T(x) = argmax_y r(y) − λc(x, y),
/// in parallel over samples. Samples are independent, so the result does not depend on the degree of parallelism.
/// </summary>
public static class ProxStage
{
    /// <summary>Applies <paramref name="oracle"/> to each sample of <paramref name="samples"/> ([N, ...] row-major).</summary>
    /// <param name="oracle">The prox oracle (thread-safe).</param>
    /// <param name="samples">N samples of <c>oracle.Reward.Size</c> values each.</param>
    /// <param name="progress">Called as samples finish (samples done of total, from any thread).</param>
    /// <param name="maxParallelism">Worker threads; default all cores.</param>
    /// <param name="cancellation">Stops the stage between samples (<see cref="OperationCanceledException"/>).</param>
    public static ProxBatch Apply(ProxOracle oracle, ReadOnlySpan<float> samples, Action<GenerationProgress>? progress = null, int? maxParallelism = null,
                                  CancellationToken cancellation = default)
    {
        int size = oracle.Reward.Size;
        if (samples.Length % size != 0) throw new ArgumentException($"{samples.Length} values do not split into samples of {size}");
        int count = samples.Length / size;
        var input = samples.ToArray();
        var output = new float[input.Length];
        var results = new ProxResult[count];
        int done = 0;
        var gate = new object();
        var clock = Stopwatch.StartNew();
        Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = maxParallelism ?? Environment.ProcessorCount, CancellationToken = cancellation }, i =>
        {
            results[i] = oracle.Solve(input.AsSpan(i * size, size), output.AsSpan(i * size, size));
            if (progress is null) return;
            lock (gate)
            {
                done++;
                progress(new GenerationProgress(done, count, done, count));
            }
        });
        return new ProxBatch(output, results, clock.Elapsed);
    }
}
