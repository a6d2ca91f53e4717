using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxAlign.Core;
using OnnxAlign.IO;

namespace OnnxAlign.Alignment;

/// <summary>
/// A shard's block of SMC systems on disk (DESIGN §10): <c>systems.npy</c> holds every particle of its systems, system
/// after system ([systems × particles, sample shape…]), and <c>systems.json</c> each system's index, per-particle log
/// weights and final potentials G, log Ẑ, resamplings, network evaluations and dropped particles (<see cref="SmcSystem.ToJson"/>).
/// Both are written atomically, the description last, so a folder with a description holds its particles. A merge reads
/// them back and combines the systems of all shards in index order, with no network (the potentials are stored).
/// </summary>
public static class SmcSystemFiles
{
    /// <summary>The particles' file.</summary>
    public const string SamplesFile = "systems.npy";

    /// <summary>The systems' description.</summary>
    public const string DescriptionFile = "systems.json";

    /// <summary>The description's format name.</summary>
    public const string FormatName = "onnxalign-smc-systems/1";

    /// <summary>Writes <paramref name="block"/> into <paramref name="folder"/>; returns the files' names.</summary>
    /// <param name="folder">The shard's output folder.</param>
    /// <param name="block">The finished systems.</param>
    /// <param name="sampleShape">One particle's shape.</param>
    public static IReadOnlyList<string> Write(string folder, SmcBlock block, IReadOnlyList<int> sampleShape)
    {
        int size = sampleShape.Aggregate(1, (a, b) => a * b);
        int particles = block.Finished.Sum(s => s.LogWeights.Length);
        var data = new float[(long)particles * size];
        long offset = 0;
        foreach (var system in block.Finished) { system.Samples.CopyTo(data.AsSpan((int)offset)); offset += system.Samples.Length; }
        NpyFile.Write(Path.Combine(folder, SamplesFile), data, [particles, .. sampleShape]);
        var description = new JsonObject
        {
            ["format"] = FormatName,
            ["method"] = block.Method,
            ["systems"] = block.Systems,
            ["first"] = block.Block.First,
            ["end"] = block.Block.End,
            ["list"] = new JsonArray(block.Finished.Select((s, i) =>
            {
                var json = s.ToJson();
                json["index"] = block.Block.First + i;
                json["particles"] = s.LogWeights.Length;
                return (JsonNode)json;
            }).ToArray()),
        };
        AtomicFile.WriteText(Path.Combine(folder, DescriptionFile), description.ToJsonString() + "\n");
        return [SamplesFile, DescriptionFile];
    }

    /// <summary>Reads a block written by <see cref="Write"/>.</summary>
    /// <exception cref="ConfigException">A file is missing, damaged or does not match the other (parameter <c>shards</c>).</exception>
    public static SmcBlock Read(string folder)
    {
        string path = Path.Combine(folder, DescriptionFile), samplesPath = Path.Combine(folder, SamplesFile);
        if (!File.Exists(path)) throw ConfigException.For("shards", $": {path} is missing");
        if (!File.Exists(samplesPath)) throw ConfigException.For("shards", $": {samplesPath} is missing");
        try
        {
            var json = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new FormatException("not a JSON object");
            if ((string?)json["format"] != FormatName) throw new FormatException($"format '{json["format"]}', expected {FormatName}");
            var block = new SystemBlock((int)json["first"]!, (int)json["end"]!);
            var list = json["list"]!.AsArray();
            if (list.Count != block.Length) throw new FormatException($"{list.Count} systems for the block {block}");
            var samples = NpyFile.Read(samplesPath);
            // A system's particles are finite (a dropped one is zeroed with weight 0): anything else is damage.
            if (samples.Data.Any(v => !float.IsFinite(v))) throw new FormatException($"{SamplesFile} holds NaN or ±∞ values");
            int size = samples.RowSize, row = 0;
            var systems = new List<SmcSystem>();
            for (int i = 0; i < list.Count; i++)
            {
                var entry = list[i]!.AsObject();
                if ((int)entry["index"]! != block.First + i) throw new FormatException($"system {entry["index"]} where {block.First + i} belongs");
                int particles = (int)entry["particles"]!;
                if (row + particles > samples.Rows) throw new FormatException($"{SamplesFile} holds {samples.Rows} particles, fewer than the systems list");
                var data = samples.Data.AsSpan(row * size, particles * size).ToArray();
                row += particles;
                systems.Add(SmcSystem.FromJson(entry, data) ?? throw new FormatException($"system {block.First + i} does not match its particles"));
            }
            if (row != samples.Rows) throw new FormatException($"{SamplesFile} holds {samples.Rows} particles, the systems {row}");
            return new SmcBlock((string)json["method"]!, block, (int)json["systems"]!, systems, TimeSpan.Zero);
        }
        catch (Exception e) when (e is FormatException or JsonException or InvalidOperationException or NullReferenceException)
        {
            throw ConfigException.For("shards", $": {path} is not a shard's SMC systems ({e.Message})");
        }
    }
}
