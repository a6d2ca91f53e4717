using System.Globalization;
using OnnxAlign.Core;

namespace OnnxAlign.Sampling;

/// <summary>
/// Shard i of n (0-based) of a run's sample indices: the contiguous block [⌊i·N/n⌋, ⌊(i+1)·N/n⌋). Because sample k
/// always uses noise stream seed + k, concatenating the shards' samples in shard order gives exactly the unsharded run.
/// </summary>
public readonly record struct Shard(int Index, int Count)
{
    /// <summary>The whole run as one shard.</summary>
    public static Shard Whole => new(0, 1);

    /// <summary>The first sample index and the number of samples of this shard out of <paramref name="total"/>.</summary>
    public (int Start, int Length) Range(int total)
    {
        int start = (int)((long)Index * total / Count);
        int end = (int)((long)(Index + 1) * total / Count);
        return (start, end - start);
    }

    /// <summary>Parses <c>i/n</c> with 0 ≤ i &lt; n.</summary>
    /// <exception cref="ConfigException">Not of that form (parameter <c>shard</c>).</exception>
    public static Shard Parse(string text)
    {
        var parts = text.Split('/');
        if (parts.Length == 2
            && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int i)
            && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int n)
            && n >= 1 && i < n)
            return new Shard(i, n);
        throw ConfigException.For("shard", $"'{text}': expected i/n with 0 ≤ i < n (e.g. 0/4)");
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Index}/{Count}";
}
