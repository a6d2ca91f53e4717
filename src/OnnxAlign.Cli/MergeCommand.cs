using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxAlign.Core;
using OnnxAlign.IO;
using OnnxAlign.Jobs;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>
/// <c>onnxalign merge --out DIR SHARD_DIR…</c>: the shards of one run reassembled into the single-machine output
/// (DESIGN §10; <see cref="ShardMerge"/>), with one report: the run's statistics from the merged samples, per-sample
/// summaries pooled with their standard errors, network evaluations summed, and each shard's timings kept. Shards of a
/// planned SMC run hold systems, not samples: their merge combines the systems and resamples, through the plan's
/// single-machine run (<see cref="GenerateCommand.RunMerged"/>).
/// </summary>
internal static class MergeCommand
{
    public static Command Create()
    {
        var shards = new Argument<string[]>("shards") { Description = "The shards' output folders (any order).", Arity = ArgumentArity.OneOrMore };
        var output = new Option<string>("--out") { Description = "The merged output folder.", Required = true };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace a previous run in --out." };
        var command = new Command("merge", "Merge the shards of one run (generate --plan … --shard i/n) into the single-machine output, checked to cover every sample once.")
        {
            shards, output, overwrite,
        };
        command.SetAction(parse => Run(parse.GetValue(shards)!, parse.GetValue(output)!, parse.GetValue(overwrite)));
        return command;
    }

    /// <summary>Why a shard is not complete, from its report's error (absent when the report was edited by hand).</summary>
    private static string Stopped(JsonObject report) =>
        report["error"] is JsonObject error ? $"stopped at a NaN/±∞ sample ({error.ToJsonString()}); rerun it" : "stopped (its report names no error); rerun it";

    private static int Run(string[] folders, string output, bool overwrite)
    {
        var clock = Stopwatch.StartNew();
        var reports = new List<JsonObject>();
        var parts = new List<ShardPart>();
        foreach (string folder in folders)
        {
            var (part, report) = Read(folder);
            parts.Add(part);
            reports.Add(report);
        }
        foreach (var folder in folders)
            if (Path.GetFullPath(folder).TrimEnd('/') == Path.GetFullPath(output).TrimEnd('/'))
                throw new UsageException($"--out {output}: is one of the shards; merge into another folder");
        var ordered = ShardMerge.Check(parts);
        if (ordered[0].Unit == "systems") return MergeSystems(ordered, parts.Zip(reports).ToDictionary(p => p.First.Shard.Index, p => p.Second), output, overwrite, clock);
        var byIndex = parts.Zip(reports).ToDictionary(p => p.First.Shard.Index, p => p.Second);
        var first = byIndex[0];
        var sampleShape = first["model"]!["sample_shape"]!.AsArray().Select(v => (int)v!.GetValue<double>()).ToArray();
        // A latent model's shards hold the latents (the samples' statistics are theirs) and the decoded images (DESIGN §9).
        var imageShape = first["latent"]?["image_shape"]?.AsArray().Select(v => (int)v!.GetValue<double>()).ToArray();

        // Every file the merge reads is checked before the output folder is opened: a refused merge writes nothing.
        bool withBase = ordered.All(p => File.Exists(Path.Combine(p.Directory, "base.npy")));
        if (imageShape is not null)
        {
            if (withBase) ShardMerge.CheckFiles(ordered, sampleShape, stem: "base_latents");
            ShardMerge.CheckFiles(ordered, sampleShape, stem: "latents");
        }
        if (withBase) ShardMerge.CheckFiles(ordered, imageShape ?? sampleShape, stem: "base");
        ShardMerge.CheckFiles(ordered, imageShape ?? sampleShape);
        using var job = OutputJob.Open(output, new OutputJobSettings { Overwrite = overwrite });
        var shards = ordered.Select(p => (p, byIndex[p.Shard.Index])).ToList();
        // One report for the run: the first shard's (everything the plan fixes is the same in every shard), its merged figures filled in once the files are.
        var merged = JobReport.FromJson(first) with
        {
            Status = JobStatus.Finished, Error = null, TimeSeconds = null,
            NetworkEvaluations = shards.Sum(s => (long)s.Item2["network_evaluations"]!),
        };
        var written = job.Finish(new JobOutput(merged, () =>
        {
            var files = new List<string>();
            if (imageShape is not null)
            {
                if (withBase) files.AddRange(ShardMerge.Write(output, ordered, sampleShape, stem: "base_latents", filesChecked: true));
                files.AddRange(ShardMerge.Write(output, ordered, sampleShape, stem: "latents", filesChecked: true));
            }
            if (withBase) files.AddRange(ShardMerge.Write(output, ordered, imageShape ?? sampleShape, stem: "base", filesChecked: true));
            files.AddRange(ShardMerge.Write(output, ordered, imageShape ?? sampleShape, filesChecked: true));
            MergeBlocks(merged.Blocks, shards, output, sampleShape);
            merged.Blocks["merge"] = new JsonObject
            {
                ["shards"] = ordered.Count,
                ["time_seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 6),
                ["sources"] = new JsonArray(ordered.Select(p => (JsonNode)Path.GetFullPath(p.Directory)).ToArray()),
            };
            return files;
        }));
        var mergedFiles = written["files"]!.AsArray().Select(f => (string)f!).ToList();
        int count = ordered.Sum(p => p.Indices.Count);
        Console.WriteLine($"merged {ordered.Count} shards of run {first["run"]!["id"]} into {Path.GetFullPath(output)}: {count} samples ({string.Join(", ", RunReport.Summary(mergedFiles))}) in {clock.Elapsed.TotalSeconds:F2} s");
        return 0;
    }

    /// <summary>
    /// A shard folder as its report describes it: a stopped or unfinished shard is a part whose status says why (Check
    /// names them all at once); a folder without a readable generate report is refused at once.
    /// </summary>
    private static (ShardPart Part, JsonObject Report) Read(string folder)
    {
        string path = Path.Combine(folder, "report.json");
        if (!Directory.Exists(folder)) throw ConfigException.For("shards", $": {folder} is not a folder");
        if (!File.Exists(path))
            throw ConfigException.For("shards", $": {folder} has no report.json ({(BatchCheckpoint.Exists(folder) ? "an interrupted or running shard: finish it with --resume" : "not a finished shard")})");
        JsonObject report;
        try { report = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new JsonException("not an object"); }
        catch (JsonException e) { throw ConfigException.For("shards", $": {path} is not a report ({e.Message})"); }
        try
        {
            if ((string?)report["command"] != "generate") throw new FormatException($"a report of '{report["command"]}', not of generate");
            string id = (string?)report["run"]?["id"] ?? throw new FormatException("no run id (written by an older version?)");
            var shard = new Shard((int)report["shard"]!["index"]!, (int)report["shard"]!["count"]!);
            if (report["smc_shard"] is JsonObject smc)
            {
                // A shard of a planned SMC run: its block is of the plan's systems (DESIGN §10).
                int systems = (int)smc["systems"]!, first = (int)smc["first"]!, end = (int)smc["end"]!;
                string? smcStatus = (string?)report["status"] is "stopped" ? Stopped(report)
                    : BatchCheckpoint.Exists(folder) ? "its .partial/ holds unfinished work" : null;
                return (new ShardPart(folder, id, shard, systems, first, Enumerable.Range(first, end - first).ToList(), smcStatus, "systems"), report);
            }
            int total = (int)report["count"]!;
            int firstSample = (int)report["shard"]!["first_sample"]!;
            var (start, length) = shard.Range(total);
            var skipped = report["skipped_non_finite"]?.AsArray().Select(v => (int)v!).ToHashSet() ?? [];
            var indices = Enumerable.Range(start, length).Where(i => !skipped.Contains(i)).ToList();
            string? status = (string?)report["status"] is "stopped" ? Stopped(report) : null;
            if (status is null && BatchCheckpoint.Exists(folder)) status = "its .partial/ holds unfinished work";
            if (status is null && (int)report["shard"]!["samples"]! != indices.Count)
                status = $"its report lists {report["shard"]!["samples"]} samples, its block and skipped samples say {indices.Count}";
            return (new ShardPart(folder, id, shard, total, firstSample, indices, status), report);
        }
        catch (Exception e) when (e is FormatException or InvalidOperationException or NullReferenceException)
        {
            throw ConfigException.For("shards", $": {path} is not a shard report ({e.Message})");
        }
    }

    /// <summary>
    /// The merge of a planned SMC run's shards (DESIGN §10): every system once, from one plan, combined in index order by
    /// the plan's single-machine run (<see cref="GenerateCommand.RunMerged"/>: the same code path as <c>generate --plan</c>,
    /// with the systems taken from the shards), which computes the estimates, resamples the run's samples with the plan's
    /// seed and writes them; neither the UNet nor the reward is evaluated (the systems carry their potentials).
    /// </summary>
    private static int MergeSystems(IReadOnlyList<ShardPart> ordered, Dictionary<int, JsonObject> reports, string output, bool overwrite, Stopwatch clock)
    {
        var first = reports[ordered[0].Shard.Index];
        string planPath = (string?)first["run"]?["plan"] ?? throw ConfigException.For("shards", $": {ordered[0].Directory} names no plan; an SMC shard runs a plan (generate --plan)");
        var plan = PlanFile.Read(planPath);
        if (plan.Id != ordered[0].RunId)
            throw ConfigException.For("shards", $": the plan {planPath} (id {plan.Id}) is not the one the shards ran ({ordered[0].RunId}); it was remade after them");
        var systems = new Dictionary<int, OnnxAlign.Alignment.SmcSystem>();
        foreach (var part in ordered)
        {
            var block = OnnxAlign.Alignment.SmcSystemFiles.Read(part.Directory);
            var (start, length) = part.Shard.Range(part.Total);
            if (block.Systems != part.Total || block.Block.First != start || block.Block.End != start + length)
                throw ConfigException.For("shards", $": {Path.Combine(part.Directory, OnnxAlign.Alignment.SmcSystemFiles.DescriptionFile)} holds systems {block.Block} of {block.Systems}, its report says [{start}, {start + length}) of {part.Total}");
            for (int k = 0; k < block.Finished.Count; k++) systems[block.Block.First + k] = block.Finished[k];
        }
        GenerateCommand.RunMerged(planPath, output, overwrite, new OnnxAlign.Alignment.SmcSystemSet(systems, complete: true), report =>
        {
            report["merge"] = new JsonObject
            {
                ["shards"] = ordered.Count,
                ["systems"] = systems.Count,
                ["time_seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 6),
                ["sources"] = new JsonArray(ordered.Select(p => (JsonNode)Path.GetFullPath(p.Directory)).ToArray()),
                ["how"] = "the shards' SMC systems combined in index order, the estimates computed and the samples resampled with the plan's seed, as generate --plan runs it on one machine; neither the UNet nor the reward evaluated (the systems carry their potentials)",
            };
            report["shards"] = new JsonArray(ordered.Select(p => (JsonNode)new JsonObject
            {
                ["index"] = p.Shard.Index,
                ["folder"] = Path.GetFullPath(p.Directory),
                ["systems"] = new JsonArray(p.FirstSample, p.FirstSample + p.Indices.Count),
                ["network_evaluations"] = reports[p.Shard.Index]["network_evaluations"]?.DeepClone(),
                ["time_seconds"] = reports[p.Shard.Index]["time_seconds"]?.DeepClone(),
                ["device"] = reports[p.Shard.Index]["model"]?["device"]?.DeepClone(),
            }).ToArray());
        });
        Console.WriteLine($"merged {ordered.Count} SMC shards ({systems.Count} systems) of run {plan.Id} into {Path.GetFullPath(output)} in {clock.Elapsed.TotalSeconds:F2} s");
        return 0;
    }

    /// <summary>
    /// The run's blocks from the first shard's (everything the plan fixes is the same in every shard): the statistics of
    /// the merged samples, the shard block of the whole run, per-sample summaries of the alignment pooled, and each
    /// shard's own figures under <c>shards</c>.
    /// </summary>
    private static void MergeBlocks(JsonObject merged, IReadOnlyList<(ShardPart Part, JsonObject Report)> shards, string output, int[] sampleShape)
    {
        int count = shards.Sum(s => s.Part.Indices.Count);
        bool latent = shards[0].Report["latent"] is not null;
        // Streamed: the merge holds one chunk of the run's samples, not all of them.
        merged["statistics"] = RunReport.Statistics(Path.Combine(output, latent ? "latents.npy" : "samples.npy"), sampleShape.Aggregate(1, (a, b) => a * b));
        if (shards.All(s => s.Report["base_statistics"] is not null))
            merged["base_statistics"] = RunReport.Statistics(Path.Combine(output, latent ? "base_latents.npy" : "base.npy"), sampleShape.Aggregate(1, (a, b) => a * b));
        merged["shard"] = new JsonObject { ["index"] = 0, ["count"] = 1, ["first_sample"] = 0, ["samples"] = count };
        var skipped = shards.SelectMany(s => s.Report["skipped_non_finite"]?.AsArray().Select(v => (int)v!) ?? []).ToList();
        if (skipped.Count > 0) merged["skipped_non_finite"] = new JsonArray(skipped.Select(i => (JsonNode)i).ToArray());
        merged.Remove("non_finite");
        var perShard = new JsonArray();
        foreach (var (part, report) in shards)
            perShard.Add(new JsonObject
            {
                ["index"] = part.Shard.Index,
                ["folder"] = Path.GetFullPath(part.Directory),
                ["first_sample"] = part.FirstSample,
                ["samples"] = part.Indices.Count,
                ["network_evaluations"] = report["network_evaluations"]?.DeepClone(),
                ["time_seconds"] = report["time_seconds"]?.DeepClone(),
                ["device"] = report["model"]?["device"]?.DeepClone(),
            });
        if (merged["alignment"] is JsonObject)
        {
            var (alignment, perShardKeys) = ShardMerge.MergeAlignment(shards.Select(s => s.Report["alignment"] as JsonObject).ToList(), count);
            merged["alignment"] = alignment;
            // A per-shard diagnostic (e.g. the drift of the fast tilt's own samples): kept per shard, not averaged wrongly.
            foreach (string key in perShardKeys)
                for (int i = 0; i < shards.Count; i++)
                {
                    var own = (JsonObject)(((JsonObject)perShard[i]!)["alignment"] ??= new JsonObject());
                    own[key] = shards[i].Report["alignment"]?[key]?.DeepClone();
                }
        }
        merged["shards"] = perShard;
    }
}
