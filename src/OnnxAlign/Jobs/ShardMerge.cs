using System.Text.Json.Nodes;
using OnnxAlign.Core;
using OnnxAlign.IO;
using OnnxAlign.Sampling;

namespace OnnxAlign.Jobs;

/// <summary>What a shard's folder holds, as its report says it.</summary>
/// <param name="Directory">The shard's output folder.</param>
/// <param name="RunId">The run's identity (a plan's id, or the hash of the settings of an unplanned sharded run): shards of one run share it.</param>
/// <param name="Shard">Which shard it is.</param>
/// <param name="Total">Samples of the whole run.</param>
/// <param name="FirstSample">The run-wide index of its first sample.</param>
/// <param name="Indices">The run-wide index of each sample it holds, in order (a sample dropped under --on-nan skip is absent).</param>
/// <param name="Status">Null when it finished; otherwise why it is not complete (stopped, interrupted).</param>
/// <param name="Unit">
/// What the indices count: <c>samples</c>, or <c>systems</c> for a shard of a planned SMC run (DESIGN §10), whose block is
/// of the plan's systems (<paramref name="Total"/> of them) rather than of its samples.
/// </param>
public sealed record ShardPart(string Directory, string RunId, Shard Shard, int Total, int FirstSample, IReadOnlyList<int> Indices, string? Status, string Unit = "samples");

/// <summary>
/// Reassembles the shards of one run into the single-machine output (DESIGN §10): checks that they come from one run,
/// cover every shard once and are complete, then writes <c>samples.npy</c> (streamed: the shards' data in shard order
/// under one header, so its bytes equal the unsharded run's), the PNGs under their run-wide indices (copied) and
/// <c>grid.png</c> (from the first samples, as the unsharded run draws it). Shards of a planned SMC run are checked the
/// same way over the plan's systems (<see cref="ShardPart.Unit"/> <c>systems</c>); their systems are combined and
/// resampled by the plan's run (DESIGN §10), not concatenated.
/// </summary>
public static class ShardMerge
{
    /// <summary>The shards in shard order, once checked.</summary>
    /// <exception cref="ConfigException">Shards of different runs, a shard missing or given twice, or one not complete (parameter <c>shards</c>); every problem is named.</exception>
    public static IReadOnlyList<ShardPart> Check(IReadOnlyList<ShardPart> parts)
    {
        if (parts.Count == 0) throw ConfigException.For("shards", ": expected at least one shard folder");
        var first = parts[0];
        foreach (var part in parts)
        {
            if (part.RunId != first.RunId)
                throw ConfigException.For("shards", $": {part.Directory} is of another run (run id {part.RunId}) than {first.Directory} ({first.RunId}); merge the shards of one plan");
            if (part.Unit != first.Unit)
                throw ConfigException.For("shards", $": {part.Directory} holds {part.Unit}, {first.Directory} holds {first.Unit}; merge the shards of one run");
            if (part.Shard.Count != first.Shard.Count || part.Total != first.Total)
                throw ConfigException.For("shards", $": {part.Directory} is shard {part.Shard} of {part.Total} {part.Unit}, {first.Directory} is {first.Shard} of {first.Total}");
        }
        var problems = new List<string>();
        // An SMC shard is named with its block of systems too: that is what the merge lacks or has twice.
        string Name(int index)
        {
            if (first.Unit == "samples") return $"{index}";
            var (start, length) = new Shard(index, first.Shard.Count).Range(first.Total);
            return $"{index} ({first.Unit} [{start}, {start + length}) of {first.Total})";
        }
        var duplicates = parts.GroupBy(p => p.Shard.Index).Where(g => g.Count() > 1).ToList();
        foreach (var twice in duplicates) problems.Add($"shard {Name(twice.Key)} is given twice ({string.Join(", ", twice.Select(p => p.Directory))})");
        var missing = Enumerable.Range(0, first.Shard.Count).Except(parts.Select(p => p.Shard.Index)).ToList();
        if (missing.Count > 0)
            problems.Add($"{missing.Count} of {first.Shard.Count} shards are missing: {string.Join(", ", missing.Take(20).Select(Name))}{(missing.Count > 20 ? ", …" : "")}");
        foreach (var part in parts.Where(p => p.Status is not null)) problems.Add($"shard {part.Shard.Index} ({part.Directory}) is not complete: {part.Status}");
        foreach (var part in parts.Where(p => p.Status is null))
        {
            var (start, length) = part.Shard.Range(part.Total);
            if (part.FirstSample != start || part.Indices.Count > length || part.Indices.Any(i => i < start || i >= start + length))
                problems.Add($"shard {part.Shard.Index} ({part.Directory}) holds {part.Unit} outside its block [{start}, {start + length})");
        }
        if (problems.Count > 0) throw ConfigException.For("shards", ": " + string.Join("; ", problems));
        return parts.OrderBy(p => p.Shard.Index).ToList();
    }

    /// <summary>
    /// Checks the shards' files of <paramref name="stem"/> before anything is merged (<see cref="Write"/> calls it; a
    /// command calls it before it opens its output folder, so that a refused merge writes nothing): every file exists,
    /// each .npy holds its report's number of finite samples of <paramref name="sampleShape"/>.
    /// </summary>
    /// <exception cref="ConfigException">A file is missing, of another shape or count, or holds NaN/±∞ (parameter <c>shards</c>).</exception>
    public static void CheckFiles(IReadOnlyList<ShardPart> parts, IReadOnlyList<int> sampleShape, string stem = "samples", CancellationToken cancellation = default)
    {
        var sources = parts.Select(p => Path.Combine(p.Directory, $"{stem}.npy")).ToList();
        foreach (var source in sources)
            if (!File.Exists(source)) throw ConfigException.For("shards", $": {source} is missing");
        string prefix = stem == "samples" ? "sample" : stem;
        bool images = ImageFiles.IsImage(sampleShape);
        if (images)
            foreach (var part in parts)
                foreach (int index in part.Indices)
                {
                    string source = Path.Combine(part.Directory, $"{prefix}_{index:D6}.png");
                    if (!File.Exists(source)) throw ConfigException.For("shards", $": {source} is missing");
                }
        int size = sampleShape.Aggregate(1, (a, b) => a * b);
        foreach (var (part, source) in parts.Zip(sources))
        {
            long rows = 0;
            // A shard's samples are finite (a skipped sample is not in its file): NaN or ±∞ is damage, not a sample.
            foreach (var chunk in NpyFile.ReadRows(source, 4096))
            {
                cancellation.ThrowIfCancellationRequested();
                if (chunk.RowSize != size)
                    throw ConfigException.For("shards", $": {source} holds rows of [{string.Join(", ", chunk.Shape.Skip(1))}], the reports say samples of [{string.Join(", ", sampleShape)}]");
                int bad = Array.FindIndex(chunk.Data, v => !float.IsFinite(v));
                if (bad >= 0) throw ConfigException.For("shards", $": {source} holds a NaN or ±∞ value (row {rows + bad / chunk.RowSize}); regenerate that shard");
                rows += chunk.Rows;
            }
            if (rows != part.Indices.Count)
                throw ConfigException.For("shards", $": {source} holds {rows} samples, its report says {part.Indices.Count}");
        }
    }

    /// <summary>
    /// Writes the merged files of <paramref name="stem"/> (<c>samples</c>, or <c>base</c> beside a prox stage's) into
    /// <paramref name="output"/>; returns their names. <paramref name="parts"/> come from <see cref="Check"/>; their
    /// files are checked first (<see cref="CheckFiles"/>) unless <paramref name="filesChecked"/> says the caller did.
    /// </summary>
    /// <exception cref="ConfigException">A shard's file is missing or does not match its report.</exception>
    public static IReadOnlyList<string> Write(string output, IReadOnlyList<ShardPart> parts, IReadOnlyList<int> sampleShape, string stem = "samples",
                                              CancellationToken cancellation = default, bool filesChecked = false)
    {
        // Reading every shard file is the check's cost: a caller that ran it before opening its folder does not pay it twice.
        if (!filesChecked) CheckFiles(parts, sampleShape, stem, cancellation);
        var sources = parts.Select(p => Path.Combine(p.Directory, $"{stem}.npy")).ToList();
        string prefix = stem == "samples" ? "sample" : stem;
        bool images = ImageFiles.IsImage(sampleShape);
        var written = new List<string>();
        var shape = NpyFile.Concatenate(Path.Combine(output, $"{stem}.npy"), sources);
        int expected = parts.Sum(p => p.Indices.Count);
        if (shape[0] != expected || !shape.AsSpan(1).SequenceEqual(sampleShape.ToArray()))
            throw ConfigException.For("shards", $": the shards' {stem}.npy hold [{string.Join(", ", shape)}], their reports say {expected} samples of [{string.Join(", ", sampleShape)}]");
        written.Add($"{stem}.npy");
        if (!images) return written;
        foreach (var part in parts)
            foreach (int index in part.Indices)
            {
                cancellation.ThrowIfCancellationRequested();
                string name = $"{prefix}_{index:D6}.png";
                string source = Path.Combine(part.Directory, name);
                if (!File.Exists(source)) throw ConfigException.For("shards", $": {source} is missing");
                AtomicFile.Write(Path.Combine(output, name), s => { using var input = File.OpenRead(source); input.CopyTo(s); });
                written.Add(name);
            }
        if (expected == 0) return written;
        // The grid shows the first samples of the whole run, as the unsharded run draws it.
        int size = sampleShape.Aggregate(1, (a, b) => a * b), shown = Math.Min(expected, SampleSetWriter.GridLimit);
        var head = new float[(long)shown * size];
        int filled = 0;
        foreach (var source in sources)
        {
            if (filled == shown) break;
            // Only the rows the grid shows are read, not the shard's whole file.
            foreach (var part in NpyFile.ReadRows(source, shown - filled))
            {
                part.Data.CopyTo(head.AsSpan(filled * size));
                filled += part.Rows;
                break;
            }
        }
        string grid = stem == "samples" ? "grid.png" : $"{stem}_grid.png";
        ImageFiles.WriteGrid(Path.Combine(output, grid), head, shown, sampleShape);
        written.Add(grid);
        return written;
    }

    /// <summary>
    /// The run's <c>alignment</c> block from its shards' (DESIGN §10: estimates combined with their standard errors):
    /// values the plan fixes (the same in every shard) as they are; counts that add up over disjoint shards (the KL
    /// mixture's proposals, violations and proposal evaluations) summed, and their rates recomputed from the sums with
    /// the single run's formula; per-sample summaries {mean, std, standard_error, count} pooled; anything else each shard
    /// computed from its own samples is marked per shard, and its key returned.
    /// </summary>
    /// <param name="blocks">Each shard's block in shard order (the first one's keys are the run's).</param>
    /// <param name="count">The run's samples.</param>
    public static (JsonObject Merged, IReadOnlyList<string> PerShardKeys) MergeAlignment(IReadOnlyList<JsonObject?> blocks, int count)
    {
        var merged = (JsonObject)(blocks[0] ?? new JsonObject()).DeepClone();
        var perShard = new List<string>();
        foreach (var key in merged.Select(p => p.Key).ToList())
        {
            var values = blocks.Select(b => b?[key]).ToList();
            // Counts first: equal counts in every shard still add up.
            if (AdditiveCounts.Contains(key) && values.All(v => v is JsonValue)) { merged[key] = values.Sum(v => v!.GetValue<long>()); continue; }
            if (RatesOfCounts.ContainsKey(key)) continue;
            if (values.All(v => JsonNode.DeepEquals(v, values[0]))) continue;
            if (Pooled(values) is { } pooled) { merged[key] = pooled; continue; }
            merged[key] = new JsonObject { ["per_shard"] = true, ["reason"] = "computed from each shard's own samples; see shards[i].alignment" };
            perShard.Add(key);
        }
        foreach (var (key, (numerator, denominator)) in RatesOfCounts)
            if (merged[key] is not null && Count(merged, numerator, count) is { } top && Count(merged, denominator, count) is { } bottom)
                merged[key] = (double)top / Math.Max(bottom, 1);
        return (merged, perShard);
    }

    /// <summary>Counts of an alignment block that add up over disjoint shards.</summary>
    private static readonly HashSet<string> AdditiveCounts = ["proposed", "envelope_violations", "sampling_network_evaluations"];

    /// <summary>Rates of those counts, by (numerator, denominator); <c>count</c> is the run's samples.</summary>
    private static readonly Dictionary<string, (string Numerator, string Denominator)> RatesOfCounts = new()
    {
        ["acceptance_rate"] = ("count", "proposed"),
        ["evaluations_per_accepted_sample"] = ("sampling_network_evaluations", "count"),
    };

    private static long? Count(JsonObject alignment, string key, int count) => key == "count" ? count : alignment[key]?.GetValue<long>();

    /// <summary>
    /// Summaries {mean, std, standard_error, count} of disjoint sample blocks pooled into the run's: the mean weighted by
    /// count, the variance from the within- and between-block sums of squares (the n−1 convention of each block's std).
    /// </summary>
    private static JsonObject? Pooled(IReadOnlyList<JsonNode?> values)
    {
        if (values.Any(v => v is not JsonObject o || o["mean"] is null || o["std"] is null || o["count"] is null || o.Count != 4 || o["standard_error"] is null)) return null;
        var blocks = values.Select(v => (N: (double)v!["count"]!, Mean: (double)v["mean"]!, Std: (double)v["std"]!)).ToList();
        double n = blocks.Sum(b => b.N);
        if (n < 2) return null;
        double mean = blocks.Sum(b => b.N * b.Mean) / n;
        double squares = blocks.Sum(b => (b.N - 1) * b.Std * b.Std + b.N * (b.Mean - mean) * (b.Mean - mean));
        double std = Math.Sqrt(squares / (n - 1));
        return new JsonObject { ["mean"] = mean, ["std"] = std, ["standard_error"] = std / Math.Sqrt(n), ["count"] = (int)n };
    }
}
