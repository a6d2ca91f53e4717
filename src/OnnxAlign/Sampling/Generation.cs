using System.Diagnostics;
using OnnxAlign.Core;
using OnnxAlign.IO;
using OnnxAlign.Model;

namespace OnnxAlign.Sampling;

/// <summary>What to generate.</summary>
public sealed record GenerationRequest
{
    /// <summary>Total number of samples of the run (all shards together).</summary>
    public int Count { get; init; } = 16;

    /// <summary>Samples per network call.</summary>
    public int BatchSize { get; init; } = 16;

    /// <summary>Sample i uses noise stream (Seed, i).</summary>
    public long Seed { get; init; }

    /// <summary>Which part of the indices this process generates.</summary>
    public Shard Shard { get; init; } = Shard.Whole;

    /// <summary>x_T for all <see cref="Count"/> samples ([Count, ...]); null draws it from the noise streams.</summary>
    public NpyArray? InitialNoise { get; init; }

    /// <summary>What to do when a sample gets a NaN or infinite value at some step.</summary>
    public NonFinitePolicy OnNonFinite { get; init; } = NonFinitePolicy.Stop;

    /// <summary>Where finished batches are saved and, on resume, loaded from; null keeps them in memory only.</summary>
    public IBatchStore? Checkpoint { get; init; }

    /// <summary>
    /// Stops the run within one network call (<see cref="NetworkCancellation"/>): the run throws
    /// <see cref="OperationCanceledException"/>; batches already saved to <see cref="Checkpoint"/> stay there.
    /// </summary>
    public CancellationToken Cancellation { get; init; }

    /// <summary>
    /// A side run with the same seeds (an untilted reference, a base batch for statistics): the first
    /// <paramref name="count"/> indices, noise drawn from the streams, and none of this run's checkpoint.
    /// </summary>
    public GenerationRequest SideRun(int count) => this with { Count = count, Shard = Shard.Whole, InitialNoise = null, Checkpoint = null };
}

/// <summary>Storage for finished batches, so that an interrupted run can continue where it stopped.</summary>
public interface IBatchStore
{
    /// <summary>Fills <paramref name="destination"/> with the saved batch that starts at run index <paramref name="firstIndex"/>, if there is one of that size.</summary>
    bool TryLoad(int firstIndex, Span<float> destination);

    /// <summary>Saves a finished batch (shape [n, ...sample shape]).</summary>
    void Save(int firstIndex, ReadOnlySpan<float> batch, IReadOnlyList<int> shape);

    /// <summary>A note saved beside the batches (what a procedure records about a batch, a set-up), or null; a store without notes has none.</summary>
    string? ReadNote(string name) => null;

    /// <summary>Saves a note beside the batches; a store without notes drops it (what depends on it is then recomputed).</summary>
    void WriteNote(string name, string text) { }
}

/// <summary>What a run does with a sample that turns NaN or infinite (a network fault, an overflowing guidance step).</summary>
public enum NonFinitePolicy
{
    /// <summary>Stop the run at that step with a <see cref="NonFiniteException"/> that keeps every finished sample.</summary>
    Stop,

    /// <summary>Drop that sample and go on; the result lists the skipped indices.</summary>
    Skip,
}

/// <summary>A sample became NaN or infinite; <see cref="Finished"/> holds the samples completed before it.</summary>
public sealed class NonFiniteException(int step, int sampleIndex, GenerationResult finished)
    : OnnxAlignException($"non-finite value (NaN or ±∞) at step {step} of sample {sampleIndex}")
{
    /// <summary>The step (1-based) after which the value was found.</summary>
    public int Step { get; } = step;

    /// <summary>The run index of the sample.</summary>
    public int SampleIndex { get; } = sampleIndex;

    /// <summary>The samples finished before the fault (whole batches before the faulty one).</summary>
    public GenerationResult Finished { get; } = finished;
}

/// <summary>Progress of a generation: samples finished and denoising steps done over the whole shard.</summary>
public readonly record struct GenerationProgress(int SamplesDone, int SamplesTotal, long StepsDone, long StepsTotal);

/// <summary>Samples of one shard and how they were made.</summary>
public sealed class GenerationResult
{
    /// <summary>A result from samples made by any procedure (the KL mixture, for instance).</summary>
    public GenerationResult(float[] samples, int start, int count, long evaluations, TimeSpan model, TimeSpan total, IReadOnlyList<int>? indices = null)
    {
        Samples = samples; FirstIndex = start; Count = count; NetworkEvaluations = evaluations; ModelTime = model; TotalTime = total;
        Indices = indices ?? Enumerable.Range(start, count).ToArray();
    }

    /// <summary>The run index of each sample (consecutive from <see cref="FirstIndex"/> unless samples were skipped).</summary>
    public IReadOnlyList<int> Indices { get; }

    /// <summary>Run indices of samples dropped because they turned NaN or infinite (<see cref="NonFinitePolicy.Skip"/>).</summary>
    public IReadOnlyList<int> Skipped { get; init; } = [];

    /// <summary>The samples, one after another.</summary>
    public float[] Samples { get; }

    /// <summary>Index of the first sample in the whole run.</summary>
    public int FirstIndex { get; }

    /// <summary>Number of samples.</summary>
    public int Count { get; }

    /// <summary>Network evaluations (per sample: a batch of B counts B).</summary>
    public long NetworkEvaluations { get; }

    /// <summary>Time spent in the network.</summary>
    public TimeSpan ModelTime { get; }

    /// <summary>Wall time of the run.</summary>
    public TimeSpan TotalTime { get; }

    /// <summary>Time spent outside the network: sampler arithmetic, noise, guidance bookkeeping.</summary>
    public TimeSpan SamplerTime => TotalTime - ModelTime;
}

/// <summary>
/// Watches a generation batch by batch (a diagnostic, twisted SMC's weights): <see cref="BeginBatch"/> gives the
/// observer of the batch's steps, <see cref="EndBatch"/> its final samples. Batches loaded from a checkpoint are
/// not observed (their steps ran in an earlier process).
/// </summary>
public interface IRunObserver
{
    /// <summary>A batch of run indices firstIndex … firstIndex + batchSize − 1 starts; returns the observer of its steps (or null).</summary>
    IStepObserver? BeginBatch(int firstIndex, int batchSize);

    /// <summary>The batch finished; <paramref name="samples"/> are its final samples.</summary>
    void EndBatch(int firstIndex, ReadOnlySpan<float> samples, int batchSize);
}

/// <summary>Runs a sampler over many samples in batches with per-sample noise streams (DESIGN §6).</summary>
public static class Generation
{
    /// <summary>Generates the samples of <paramref name="request"/>'s shard.</summary>
    /// <param name="denoiser">The law to sample (the base network or a guidance decorator of it).</param>
    /// <param name="sampler">The reverse-time sampler.</param>
    /// <param name="request">What to generate.</param>
    /// <param name="progress">Called after every step with the shard's progress.</param>
    /// <param name="observer">Sees every batch's steps (diagnostics, resampling); null for none.</param>
    public static GenerationResult Run(IDenoiser denoiser, Sampler sampler, GenerationRequest request, Action<GenerationProgress>? progress = null,
                                       IRunObserver? observer = null) =>
        Run(denoiser, sampler, request, progress, observer, procedure: null);

    /// <summary>
    /// The one generation loop (DESIGN §6): batches of run indices, x_T from each sample's stream, the NaN policy, the
    /// checkpoint and progress; <paramref name="procedure"/> (null: one pass of the sampler) turns a batch's x_T into its
    /// final samples when that takes more than one pass — the KL mixture's per-sample rejection (DESIGN §2).
    /// </summary>
    internal static GenerationResult Run(IDenoiser denoiser, Sampler sampler, GenerationRequest request, Action<GenerationProgress>? progress,
                                         IRunObserver? observer, IBatchProcedure? procedure)
    {
        if (procedure is not null && observer is not null) throw new ArgumentException("a batch procedure runs its own passes; no run observer can follow them", nameof(observer));
        if (request.Count < 1) throw new ArgumentOutOfRangeException(nameof(request), "count must be ≥ 1");
        if (request.BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(request), "batch must be ≥ 1");
        int size = denoiser.SampleSize;
        if (request.InitialNoise is { } init && (init.Rows != request.Count || init.RowSize != size))
            throw ConfigException.For("GenerationRequest.InitialNoise", $": shape [{string.Join(", ", init.Shape)}] does not fit {request.Count} samples of {size} values");

        var (start, length) = request.Shard.Range(request.Count);
        using var cancellation = NetworkCancellation.Enter(request.Cancellation);
        var metered = new MeteredDenoiser(denoiser);
        var samples = new float[(long)length * size];
        var clock = Stopwatch.StartNew();
        long stepsTotal = (long)length * sampler.Steps, stepsDone = 0;
        var skipped = new SortedSet<int>();
        for (int offset = 0; offset < length; offset += request.BatchSize)
        {
            int batch = Math.Min(request.BatchSize, length - offset);
            var x = samples.AsSpan(offset * size, batch * size);
            if (request.Checkpoint is { } store && store.TryLoad(start + offset, x) && procedure?.Restore(store, start + offset, batch) != false)
            {
                for (int b = 0; b < batch; b++)
                {
                    if (Numerics.AllFinite(x.Slice(b * size, size))) continue;
                    // Only a skip run saves such rows; under stop one is damage, not a result to drop silently.
                    if (request.OnNonFinite == NonFinitePolicy.Stop)
                        throw ConfigException.For("GenerationRequest.Checkpoint", $": the saved batch at sample {start + offset} holds a NaN/±∞ value in sample {start + offset + b}, which a run that stops on them ({OnnxAlignException.Option("GenerationRequest.OnNonFinite")} stop) never saves: the checkpoint is damaged; start over with {OnnxAlignException.Option("overwrite")}");
                    skipped.Add(start + offset + b);
                }
                stepsDone += (long)sampler.Steps * batch;
                progress?.Invoke(new GenerationProgress(offset + batch, length, stepsDone, stepsTotal));
                continue;
            }
            var streams = new NoiseStream[batch];
            for (int b = 0; b < batch; b++)
            {
                int index = start + offset + b;
                streams[b] = new NoiseStream(request.Seed, index);
                var row = x.Slice(b * size, size);
                if (request.InitialNoise is { } given) given.Data.AsSpan(index * size, size).CopyTo(row);
                else streams[b].NextGaussian(row);
            }
            NonFiniteException Fault(int steps, int index)
            {
                var finished = samples.AsSpan(0, offset * size).ToArray();
                return new NonFiniteException(steps, index, Kept(finished, start, offset, size, skipped, metered, clock));
            }
            if (procedure is null)
            {
                var watch = new BatchWatch(request.OnNonFinite, start + offset, Enumerable.Range(0, batch).ToArray(), size, skipped, observer?.BeginBatch(start + offset, batch),
                    Fault, steps => progress?.Invoke(new GenerationProgress(offset, length, stepsDone + (long)steps * batch, stepsTotal)));
                sampler.Sample(metered, x, batch, streams, watch);
            }
            else
            {
                var rows = new BatchRows(samples, offset, batch, start + offset, size, streams, skipped, sampler, metered,
                                         r => new BatchWatch(request.OnNonFinite, start + offset, r, size, skipped, null, Fault, _ => { }));
                procedure.Run(rows);
                if (request.Checkpoint is { } notes) procedure.Save(notes, start + offset, batch);
            }
            stepsDone += (long)sampler.Steps * batch;
            observer?.EndBatch(start + offset, x, batch);
            request.Checkpoint?.Save(start + offset, x, [batch, .. denoiser.SampleShape]);
            progress?.Invoke(new GenerationProgress(offset + batch, length, stepsDone, stepsTotal));
        }
        return Kept(samples, start, length, size, skipped, metered, clock);
    }

    /// <summary>
    /// The run's own look at every step: a sample that turned NaN/±∞ is reported where it happened (DESIGN: no silent
    /// NaN images) or dropped, progress is reported, and the caller's observer sees the step after that.
    /// </summary>
    /// <remarks><paramref name="rows"/>: the batch rows the sampler's rows are (row b of x is batch row rows[b], run index first + rows[b]).</remarks>
    private sealed class BatchWatch(NonFinitePolicy policy, int first, int[] rows, int size, SortedSet<int> skipped,
                                    IStepObserver? inner, Func<int, int, NonFiniteException> fault, Action<int> progress) : IStepObserver
    {
        public int[]? AfterStep(int stepsDone, ReadOnlySpan<float> x, ReadOnlySpan<float> denoised, int batchSize)
        {
            for (int b = 0; b < rows.Length; b++)
            {
                int index = first + rows[b];
                if (skipped.Contains(index) || Numerics.AllFinite(x.Slice(b * size, size))) continue;
                if (policy == NonFinitePolicy.Skip) { skipped.Add(index); continue; }
                throw fault(stepsDone, index);
            }
            progress(stepsDone);
            return inner?.AfterStep(stepsDone, x, denoised, batchSize);
        }
    }

    private static GenerationResult Kept(float[] samples, int start, int length, int size, SortedSet<int> skipped, MeteredDenoiser metered, Stopwatch clock)
    {
        if (skipped.Count == 0) return new GenerationResult(samples, start, length, metered.Evaluations, metered.Elapsed, clock.Elapsed);
        var indices = Enumerable.Range(start, length).Where(i => !skipped.Contains(i)).ToArray();
        var kept = new float[(long)indices.Length * size];
        for (int k = 0; k < indices.Length; k++) samples.AsSpan((indices[k] - start) * size, size).CopyTo(kept.AsSpan(k * size, size));
        return new GenerationResult(kept, start, indices.Length, metered.Evaluations, metered.Elapsed, clock.Elapsed, indices)
        {
            Skipped = skipped.Where(i => i < start + length).ToArray(),
        };
    }
}
