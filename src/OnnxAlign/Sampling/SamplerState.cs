namespace OnnxAlign.Sampling;

/// <summary>
/// What a multistep sampler carries from one step to the next for a batch (DPM-Solver++(2M): the previous x̂0).
/// Made by <see cref="Sampler.CreateState"/>; one per batch and run, not shared between threads.
/// </summary>
public sealed class SamplerState
{
    private float[] _history;

    /// <summary>State for <paramref name="batchSize"/> samples of <paramref name="sampleSize"/> values.</summary>
    public SamplerState(int batchSize, int sampleSize, bool hasHistory)
    {
        BatchSize = batchSize;
        SampleSize = sampleSize;
        _history = hasHistory ? new float[checked(batchSize * sampleSize)] : [];
    }

    /// <summary>Samples in the batch.</summary>
    public int BatchSize { get; }

    /// <summary>Values per sample.</summary>
    public int SampleSize { get; }

    /// <summary>One buffer of the batch's layout (empty when the sampler keeps no history).</summary>
    public Span<float> History => _history;

    /// <summary>Swaps <see cref="History"/> with <paramref name="buffer"/> (same length), as a multistep method rotates its x̂0 buffers.</summary>
    public void Exchange(ref float[] buffer)
    {
        if (buffer.Length != _history.Length) throw new ArgumentException("buffer of another size", nameof(buffer));
        (_history, buffer) = (buffer, _history);
    }

    /// <summary>Row b takes the state of row ancestors[b] (a resampled batch).</summary>
    public void Permute(IReadOnlyList<int> ancestors)
    {
        if (_history.Length == 0) return;
        var copy = (float[])_history.Clone();
        for (int b = 0; b < BatchSize; b++)
            copy.AsSpan(ancestors[b] * SampleSize, SampleSize).CopyTo(_history.AsSpan(b * SampleSize, SampleSize));
    }
}
