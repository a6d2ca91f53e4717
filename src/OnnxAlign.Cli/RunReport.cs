using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxAlign.Core;
using OnnxAlign.Estimation;
using OnnxAlign.Evaluation;
using OnnxAlign.IO;
using OnnxAlign.Jobs;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>The <c>report.json</c> every run writes: what ran, on what, how long, and what came out.</summary>
internal static class RunReport
{
    /// <summary>
    /// A generate run's report: the common fields (<see cref="JobReport"/>) and its blocks (config, sampler, the sample
    /// options, shard, statistics, and the toy models' reference moments).
    /// </summary>
    public static JobReport Create(string command, DiffusionModel model, OnnxDenoiser denoiser, Sampler sampler, GenerationRequest request, GenerationResult result) =>
        new() { Command = command, Model = ReportModel.Of(model, denoiser), NetworkEvaluations = result.NetworkEvaluations,
                Blocks = ReportJson.ToNode(GenerationReport.Of(model, denoiser, sampler, request, result)).AsObject() };

    /// <summary>The conditioning and latent blocks of a conditioned model (DESIGN §9), where it has them.</summary>
    public static void AddConditioning(JobReport report, Guidance.ConditionedModel opened)
    {
        if (GenerationReport.ConditioningOf(opened) is { } conditioning) report.Blocks["conditioning"] = ReportJson.ToNode(conditioning);
        if (GenerationReport.LatentOf(opened) is { } latent) report.Blocks["latent"] = ReportJson.ToNode(latent);
    }

    /// <summary>Reads the model folder's <c>mixture.json</c> when it has one, so that a damaged file is an input error before anything is written.</summary>
    public static void CheckReference(DiffusionModel model)
    {
        ReferenceReport.Of(model, 0);
    }

    /// <summary>The samples' statistics block (<see cref="SampleStatistics"/>).</summary>
    public static JsonNode Statistics(float[] samples, int sampleSize) => ReportJson.ToNode(SampleStatistics.Of(samples, sampleSize));

    /// <summary>The statistics block of the samples in a .npy file, streamed (<see cref="SampleStatistics.OfFile"/>).</summary>
    public static JsonNode Statistics(string npyPath, int sampleSize) => ReportJson.ToNode(SampleStatistics.OfFile(npyPath, sampleSize));

    /// <summary>report.json's <c>time_seconds</c> of a generation: total, network, sampler and file writing.</summary>
    public static Dictionary<string, double> Times(GenerationResult result, TimeSpan io, TimeSpan total) => new()
    {
        ["total"] = Round(total.TotalSeconds),
        ["model"] = Round(result.ModelTime.TotalSeconds),
        ["sampler"] = Round(result.SamplerTime.TotalSeconds),
        ["io"] = Round(io.TotalSeconds),
    };

    public static IEnumerable<string> Summary(IReadOnlyList<string> files)
    {
        int pngs = files.Count(f => f.EndsWith(".png", StringComparison.Ordinal) && !f.EndsWith("grid.png", StringComparison.Ordinal));
        foreach (var f in files.Where(f => !f.EndsWith(".png", StringComparison.Ordinal) || f.EndsWith("grid.png", StringComparison.Ordinal)))
            yield return f;
        if (pngs > 0) yield return $"{pngs} PNGs";
        yield return "report.json";
    }

    internal static JsonArray Array(IEnumerable<double> values) => new(values.Select(v => (JsonNode)JsonValue.Create(Round(v))).ToArray());

    /// <summary>A figure to 6 decimals (report.json's precision for times and moments).</summary>
    internal static double Round(double v) => SampleStatistics.Round(v);

    /// <summary>A finite number, or null (JSON has no NaN or ∞; the reason is given beside it where it matters).</summary>
    internal static JsonNode? Finite(double v) => double.IsFinite(v) ? JsonValue.Create(v) : null;
}
