using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using OnnxAlign.IO;
using OnnxAlign.Model;

namespace OnnxAlign.Jobs;

/// <summary>The values of report.json's <c>status</c>.</summary>
public static class JobStatus
{
    /// <summary>The run did all its work.</summary>
    public const string Finished = "finished";

    /// <summary>The run stopped on a NaN/±∞ sample; its finished work is kept and <c>error</c> says where.</summary>
    public const string Stopped = "stopped";

    /// <summary>The constraints cannot be met together (constrained alignment): no samples.</summary>
    public const string Infeasible = "infeasible";
}

/// <summary>
/// report.json as one schema (DESIGN §6): the fields every command's report has, as one typed record written by
/// <see cref="ReportJson"/>, followed by the command's own blocks (<see cref="Blocks"/>: its settings, statistics,
/// alignment). <see cref="OutputJob"/> writes it; a block may not reuse a common field's name.
/// </summary>
public sealed record JobReport
{
    /// <summary>The command or entry point that wrote the folder (<c>generate</c>, <c>align</c>, …).</summary>
    public required string Command { get; init; }

    /// <summary>The library's version.</summary>
    public string? Version { get; init; } = typeof(JobReport).Assembly.GetName().Version?.ToString();

    /// <summary>The model the run sampled, or null for a command that samples none (prox).</summary>
    public ReportModel? Model { get; init; }

    /// <summary>The run's identity: its plan's id or the hash of its run plan (null for a run without one).</summary>
    public JobRun? Run { get; init; }

    /// <summary>One of <see cref="JobStatus"/>'s values.</summary>
    public string Status { get; init; } = JobStatus.Finished;

    /// <summary>Where a stopped run stopped; null otherwise.</summary>
    public JobError? Error { get; init; }

    /// <summary>Network evaluations of the whole run (null where the command evaluates no diffusion network).</summary>
    public long? NetworkEvaluations { get; init; }

    /// <summary>Seconds by phase; <c>total</c> is always there (the job adds it when the command does not).</summary>
    public IReadOnlyDictionary<string, double>? TimeSeconds { get; init; }

    /// <summary>The files the run wrote, relative to its folder (set by the job from what the command wrote).</summary>
    public IReadOnlyList<string> Files { get; init; } = [];

    /// <summary>The command's own blocks, written after the common fields, in their order.</summary>
    [JsonIgnore]
    public JsonObject Blocks { get; init; } = [];

    /// <summary>The report as report.json holds it: the common fields, then the blocks.</summary>
    /// <exception cref="ArgumentException">A block has a common field's name.</exception>
    public JsonObject ToJson()
    {
        var node = (JsonObject)ReportJson.ToNode(this);
        foreach (var (key, value) in Blocks)
        {
            if (node.ContainsKey(key)) throw new ArgumentException($"block '{key}' is a common field of report.json; set it on the record", nameof(Blocks));
            node[key] = value?.DeepClone();
        }
        return node;
    }

    /// <summary>A report read back (a shard's, for a merge): the common fields typed, everything else as blocks.</summary>
    /// <exception cref="System.Text.Json.JsonException">A common field does not have its type.</exception>
    public static JobReport FromJson(JsonObject report)
    {
        var common = ReportJson.FromNode<JobReport>(report);
        var blocks = new JsonObject();
        foreach (var (key, value) in report)
            if (!CommonFields.Contains(key)) blocks[key] = value?.DeepClone();
        return common with { Blocks = blocks };
    }

    /// <summary>The common fields' names (the serialiser's spelling of the record's properties).</summary>
    public static IReadOnlySet<string> CommonFields { get; } = ((JsonObject)ReportJson.ToNode(new JobReport { Command = "" })).Select(p => p.Key).ToHashSet();
}

/// <summary>report.json's <c>model</c>: what was sampled, and on what device.</summary>
/// <param name="Path">The model as given.</param>
/// <param name="Onnx">The network file.</param>
/// <param name="Config">The scheduler config file.</param>
/// <param name="SampleShape">The network's sample shape.</param>
/// <param name="Device">The execution provider the network ran on.</param>
public sealed record ReportModel(string Path, string Onnx, string Config, IReadOnlyList<int> SampleShape, string Device)
{
    /// <summary>The block of <paramref name="model"/> as opened in <paramref name="network"/>.</summary>
    public static ReportModel Of(DiffusionModel model, OnnxDenoiser network) =>
        new(model.Source, model.OnnxPath, model.ConfigPath, network.SampleShape.ToArray(), network.Device);
}

/// <summary>report.json's <c>run</c>: merge joins the shards of one run by its id.</summary>
/// <param name="Id">The plan's id, or the hash of the run plan.</param>
/// <param name="Plan">The plan file the run followed (full path), or null.</param>
public sealed record JobRun(string Id, string? Plan = null);

/// <summary>report.json's <c>error</c> of a stopped run.</summary>
/// <param name="Kind"><c>non-finite</c>: a sample turned NaN/±∞.</param>
/// <param name="Step">The step (1-based) after which it was found.</param>
/// <param name="Sample">The sample's (or SMC system's first particle's) run index.</param>
public sealed record JobError(string Kind, int Step, int Sample);
