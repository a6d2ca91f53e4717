using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Evaluation;
using OnnxAlign.IO;
using OnnxAlign.Jobs;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>
/// <c>onnxalign verify MODEL --reward … --lambda …</c>: the ground-truth audit of DESIGN §1d on the user's own model —
/// importance-weighted base samples against the exact and the fast tilt, with z-scores, KL and cost.
/// </summary>
internal static class VerifyCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "The model to audit (as for generate)." };
        var reward = new Option<string>("--reward") { Description = $"A linear reward: {RewardSpec.LinearForms}.", Required = true };
        var lambda = new Option<string>("--lambda") { Description = "Temperature λ > 0 (θ = a/λ), or several separated by commas (the ground truth's base samples serve them all).", Required = true };
        var sampler = new Option<string?>("--sampler") { Description = $"One of {string.Join(", ", Sampler.Names)}; default: the config's class." };
        var steps = new Option<int>("--steps") { Description = "Denoising steps.", DefaultValueFactory = _ => 50 };
        var eta = new Option<double>("--eta") { Description = "DDIM's η.", DefaultValueFactory = _ => 0.0 };
        var baseCount = new Option<int>("--base-count") { Description = "Base samples of the ground truth (its ESS is reported; a few hundred are needed).", DefaultValueFactory = _ => 4096 };
        var count = new Option<int>("--count") { Description = "Samples of each audited run.", DefaultValueFactory = _ => 256 };
        var batch = RuntimeOptions.Batch();
        var seed = new Option<long>("--seed") { Description = "Seed of the base run (the audited runs use others).", DefaultValueFactory = _ => 0 };
        var modes = new Option<string>("--modes") { Description = "Which tilts to audit: exact, fast or exact,fast.", DefaultValueFactory = _ => "exact,fast" };
        var outDir = new Option<string?>("--out") { Description = "Folder for report.json and the mean images (optional)." };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace an earlier audit in --out." };
        var tilt = new TiltOptions();
        var runtime = new RuntimeOptions();
        var command = new Command("verify", "Audit the KL tilt on your model: importance-weighted base samples (a ground truth that assumes nothing of the tilt) against the exact and the fast tilt.")
        {
            model, reward, lambda, sampler, steps, eta, baseCount, count, batch, seed, modes, outDir, overwrite,
        };
        foreach (var option in runtime.All.Concat(tilt.ExactOptions)) command.Options.Add(option);
        command.SetAction(parse =>
        {
            var lambdas = parse.GetValue(lambda)!.Split(',').Select(v => Numbers.TryParse(v.Trim(), out double l) && l > 0 ? l
                : throw new UsageException($"--lambda '{v}': expected plain numbers > 0 separated by commas")).ToArray();
            int n = GenerateCommand.Positive(parse.GetValue(count), "--count"), nBase = GenerateCommand.Positive(parse.GetValue(baseCount), "--base-count");
            int b = GenerateCommand.Positive(parse.GetValue(batch), "--batch"), s = GenerateCommand.Positive(parse.GetValue(steps), "--steps");
            var modeList = parse.GetValue(modes)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
            if (modeList.Length == 0 || modeList.Any(m => m is not ("exact" or "fast"))) throw new UsageException($"--modes '{parse.GetValue(modes)}': expected exact, fast or exact,fast");
            var located = DiffusionModel.Locate(parse.GetValue(model)!);
            GenerateCommand.RefusePipeline(located, "verify");
            var samplerInstance = GenerateCommand.CreateSampler(parse.GetValue(sampler), located.Config, s, parse.GetValue(eta));
            var options = runtime.For(parse);
            using var denoiser = located.OpenDenoiser(options);
            string spec = parse.GetValue(reward)!;
            var linear = RewardSpec.ParseLinear(spec, denoiser.SampleShape, located.Directory);
            using var statistics = TiltAudit.StatisticsFor(linear, denoiser.SampleShape, located.Directory, options, located.DataRange);
            var range = tilt.DataRange(parse, located);
            Resources.CheckSamples(Math.Max(n, nBase), denoiser.SampleSize, "--base-count");
            Resources.CheckBatch(b, Math.Max(n, nBase), denoiser.SampleSize);
            string? output = parse.GetValue(outDir);
            // The audit's job (with --out): the folder's lock, overwrite, report.json, and a stopped report on a NaN/±∞ sample.
            using var job = output is null ? null : OutputJob.Open(output, new OutputJobSettings { Overwrite = parse.GetValue(overwrite) });
            var report = new JobReport
            {
                Command = "verify", Model = ReportModel.Of(located, denoiser),
                Blocks = new JsonObject
                {
                    ["sampler"] = new JsonObject { ["name"] = samplerInstance.Name, ["steps"] = samplerInstance.Steps, ["stochastic"] = samplerInstance.IsStochastic },
                    ["reward"] = spec,
                    ["data_range"] = range is { } r ? new JsonArray(r.Low, r.High) : null,
                },
            };

            var settings = new AuditSettings
            {
                BaseCount = nBase, Count = n, BatchSize = b, Seed = parse.GetValue(seed), Exact = modeList.Contains("exact"), Fast = modeList.Contains("fast"),
                ExactSettings = tilt.ReadExact(parse),
            };
            AuditResult[] Audit() => TiltAudit.Run(denoiser, range, samplerInstance, lambdas.Select(l => linear.Tilt(l)).ToArray(), statistics.Statistics, settings,
                new InlineProgress<string>(m => Console.Error.WriteLine($"verify: {m} …"))).ToArray();
            var results = job is null ? Audit() : job.Run(Audit, fault => new JobOutput(report with { NetworkEvaluations = fault.Finished.NetworkEvaluations }, () => []));
            for (int k = 0; k < lambdas.Length; k++)
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"== {spec}, λ = {lambdas[k]:G4}, {samplerInstance.Name} {samplerInstance.Steps} steps"));
                Console.Write(Table(results[k]));
            }
            if (job is not null)
            {
                report.Blocks["audits"] = new JsonArray(results.Select((result, k) => ReportJson.ToNode(AuditReport.Of(result, lambdas[k]))).ToArray());
                job.Finish(new JobOutput(report with { NetworkEvaluations = TiltAudit.NetworkEvaluations(results) }, () =>
                {
                    var files = new List<string>();
                    if (!ImageFiles.IsImage(denoiser.SampleShape)) return files;
                    for (int k = 0; k < lambdas.Length; k++)
                    {
                        string stem = string.Create(CultureInfo.InvariantCulture, $"lambda_{lambdas[k]:G4}");
                        ImageFiles.WritePng(Path.Combine(output!, $"{stem}_mean_truth.png"), results[k].Truth.MeanSample, denoiser.SampleShape);
                        files.Add($"{stem}_mean_truth.png");
                        foreach (var run in results[k].Runs)
                        {
                            ImageFiles.WritePng(Path.Combine(output!, $"{stem}_mean_{run.Mode}.png"), run.MeanSample, denoiser.SampleShape);
                            files.Add($"{stem}_mean_{run.Mode}.png");
                        }
                    }
                    return files;
                }));
                Console.WriteLine($"wrote {Path.GetFullPath(Path.Combine(output!, "report.json"))}");
            }
            return 0;
        });
        return command;
    }

    private static string Table(AuditResult result)
    {
        var t = result.Truth;
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"ground truth: {t.BaseCount} base samples, importance weights e^<θ,x>, ESS {t.EffectiveSampleSize:F0}");
        text.Append(t.Reliable ? "\n" : $" — UNRELIABLE (ESS < 200): raise --base-count; z-scores below are against a noisy reference\n");
        text.Append(CultureInfo.InvariantCulture, $"{"statistic",-24} {"truth",18}");
        foreach (var run in result.Runs) text.Append(CultureInfo.InvariantCulture, $" {run.Mode,18} {"z",6}");
        text.Append('\n');
        for (int k = 0; k < t.Statistics.Count; k++)
        {
            var (name, mean) = t.Statistics[k];
            text.Append(CultureInfo.InvariantCulture, $"{name,-24} {Format(mean),18}");
            foreach (var run in result.Runs) text.Append(CultureInfo.InvariantCulture, $" {Format(run.Rows[k].Run),18} {run.Rows[k].Z,6:F1}");
            text.Append('\n');
        }
        text.Append(CultureInfo.InvariantCulture, $"{"KL(q‖p)",-24} {Format(t.KlDivergence),18}");
        foreach (var run in result.Runs) text.Append(CultureInfo.InvariantCulture, $" {Format(run.KlDivergence),18} {run.KlZ,6:F1}");
        text.Append('\n');
        foreach (var run in result.Runs)
        {
            bool agrees = run.MaxAbsZ < result.ZThreshold;
            text.Append(CultureInfo.InvariantCulture, $"{run.Mode}: {(agrees ? "agrees" : "DISAGREES")} (max |z| {run.MaxAbsZ:F1}); ESS {run.EffectiveSampleSize:F0}, " +
                                                     $"{run.EvaluationsPerEffectiveSample:F0} network evaluations per effective sample (ground truth: {t.EvaluationsPerEffectiveSample:F0})");
            if (run.Drift is { } drift) text.Append(drift.IsDrifting ? "; drift diagnostic: DRIFTING" : "; drift diagnostic: flat");
            text.Append('\n');
        }
        return text.ToString();
    }

    private static string Format(Estimate e) => string.Create(CultureInfo.InvariantCulture, $"{e.Value:G4} ± {e.StandardError:G2}");
}
