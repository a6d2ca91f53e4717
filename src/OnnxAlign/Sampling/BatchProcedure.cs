using OnnxAlign.Model;

namespace OnnxAlign.Sampling;

/// <summary>
/// What turns a batch's x_T into its final samples when that takes more than one pass of the sampler: the KL mixture's
/// per-sample rejection (DESIGN §2), where a rejected sample draws its next proposal from its own stream. The one
/// generation loop (<see cref="Generation"/>) keeps the batches, x_T, the NaN policy, the checkpoint and progress, so
/// that every proposal kind shares their semantics; the procedure only samples, and keeps what it records per batch.
/// </summary>
internal interface IBatchProcedure
{
    /// <summary>Samples the batch: on entry each row holds x_T drawn from its stream (which has drawn nothing else); on return, its final sample.</summary>
    void Run(BatchRows batch);

    /// <summary>A saved batch was read from <paramref name="store"/>: restores what the procedure recorded about it, or returns false to have it sampled again.</summary>
    bool Restore(IBatchStore store, int firstIndex, int count);

    /// <summary>A batch is finished and about to be saved: keeps what the procedure records about it in <paramref name="store"/> (written before the batch, so a saved batch always has it).</summary>
    void Save(IBatchStore store, int firstIndex, int count);
}

/// <summary>
/// A batch of a generation as an <see cref="IBatchProcedure"/> sees it: its rows' samples and noise streams, and a
/// sampler pass over any subset of its rows that applies the run's NaN policy (a row that turns NaN/±∞ stops the run or
/// is skipped, as in a plain pass).
/// </summary>
internal sealed class BatchRows
{
    private readonly float[] _samples;
    private readonly int _offset;
    private readonly SortedSet<int> _skipped;
    private readonly Sampler _sampler;
    private readonly Func<int[], IStepObserver> _watch;

    internal BatchRows(float[] samples, int offset, int count, int firstIndex, int sampleSize, NoiseStream[] streams, SortedSet<int> skipped,
                       Sampler sampler, IDenoiser denoiser, Func<int[], IStepObserver> watch)
    {
        (_samples, _offset, Count, FirstIndex, SampleSize, Streams, _skipped, _sampler, Denoiser, _watch) =
            (samples, offset, count, firstIndex, sampleSize, streams, skipped, sampler, denoiser, watch);
    }

    /// <summary>Rows in the batch.</summary>
    public int Count { get; }

    /// <summary>The run index of row 0.</summary>
    public int FirstIndex { get; }

    /// <summary>Values per sample.</summary>
    public int SampleSize { get; }

    /// <summary>Row r's noise stream (seed, FirstIndex + r).</summary>
    public NoiseStream[] Streams { get; }

    /// <summary>The run's metered law: decorators of it (a tilt) count their network evaluations in the run's.</summary>
    public IDenoiser Denoiser { get; }

    /// <summary>Row r's sample.</summary>
    public Span<float> Row(int r) => _samples.AsSpan((_offset + r) * SampleSize, SampleSize);

    /// <summary>True when row r turned NaN/±∞ under the skip policy (it is dropped from the run).</summary>
    public bool IsSkipped(int r) => _skipped.Contains(FirstIndex + r);

    /// <summary>Runs the sampler on <paramref name="law"/> over <paramref name="rows"/>, each from its current sample and stream, in place.</summary>
    public void Sample(IDenoiser law, int[] rows)
    {
        var x = new float[rows.Length * SampleSize];
        for (int b = 0; b < rows.Length; b++) Row(rows[b]).CopyTo(x.AsSpan(b * SampleSize, SampleSize));
        _sampler.Sample(law, x, rows.Length, rows.Select(r => Streams[r]).ToArray(), _watch(rows));
        for (int b = 0; b < rows.Length; b++) x.AsSpan(b * SampleSize, SampleSize).CopyTo(Row(rows[b]));
    }
}
