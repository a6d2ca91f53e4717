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
}
