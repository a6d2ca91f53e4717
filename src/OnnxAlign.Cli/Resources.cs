namespace OnnxAlign.Cli;

/// <summary>Sizes checked against the memory this process may use, before anything is allocated or written.</summary>
internal static class Resources
{
    /// <summary>Refuses <paramref name="count"/> samples of <paramref name="sampleSize"/> floats when they would not fit in half the available memory.</summary>
    public static void CheckSamples(long count, long sampleSize, string flag)
    {
        long available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        double bytes = (double)count * sampleSize * sizeof(float);
        if (bytes > int.MaxValue * (double)sizeof(float) || bytes > available / 2.0)
            throw new UsageException($"{flag} {count}: {count} samples of {sampleSize} values need {bytes / (1 << 30):F1} GiB, more than half of the {available / (double)(1 << 30):F1} GiB available; generate in shards (--shard i/n) or fewer samples");
    }

    /// <summary>
    /// What one network call on a batch holds besides the samples: the network's activations, as copies of the batch.
    /// They depend on the model, so this is an allowance that refuses absurd batches, not an estimate: a UNet keeps many
    /// tensors of its input's size alive (the toy tiny-unet held over 19 copies of a 100 000-sample batch, 23.8 GB, when
    /// the kernel killed it mid-call).
    /// </summary>
    public const int ActivationCopies = 64;

    /// <summary>
    /// Refuses a batch (at most <paramref name="count"/> samples are ever in one) whose network call would need more
    /// than half the available memory by <see cref="ActivationCopies"/> copies of it: the batch size changes the speed,
    /// never the samples, so a smaller one loses nothing.
    /// </summary>
    public static void CheckBatch(long batch, long count, long sampleSize, string flag = "--batch")
    {
        long available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        double bytes = (double)Math.Min(batch, count) * sampleSize * sizeof(float) * ActivationCopies;
        if (bytes > available / 2.0)
            throw new UsageException($"{flag} {batch}: one network call on {Math.Min(batch, count)} samples of {sampleSize} values needs at least {bytes / (1 << 30):F1} GiB " +
                                     $"(the network's activations, ≥ {ActivationCopies} copies of the batch), more than half of the {available / (double)(1 << 30):F1} GiB available; " +
                                     "use a smaller --batch (it changes the speed, never the samples)");
    }
}
