using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxAlign.Alignment;
using OnnxAlign.Alignment.Prox;
using OnnxAlign.Core;
using OnnxAlign.Estimation;
using OnnxAlign.Evaluation;
using OnnxAlign.Guidance;
using OnnxAlign.IO;
using OnnxAlign.Jobs;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>
/// <c>onnxalign sweep MODEL --reward SPEC --lambdas L1,L2,..</c>: KL alignment (the exact tilt by SMC, the fast
/// projected tilt and the hybrid tilt, DESIGN §1, §1b, §1d) and Wasserstein alignment (prox, §3) across λ, measured by
/// an independent evaluator: target-class rate, reward, and RMS distance to the base samples of the same seeds (not
/// for the exact tilt, whose SMC resamples). Writes sweep.json, sweep.md, sweep.png, drift.png and grid.png.
/// </summary>
internal static class SweepCommand
{
    private static readonly string[] Methods = ["kl-exact", "kl-fast", "kl-hybrid", "w2-prox"];

    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "Model folder (with evaluator/ for the class rate)." };
        var reward = new Option<string>("--reward") { Description = "A linear reward, e.g. class:Trouser.", Required = true };
        var lambdas = new Option<string>("--lambdas") { Description = "Comma-separated λ values.", DefaultValueFactory = _ => "1,0.3,0.1,0.03,0.01" };
        var count = new Option<int>("--count") { Description = "Samples per method and λ (same seeds throughout).", DefaultValueFactory = _ => 256 };
        var steps = new Option<int>("--steps") { Description = "Denoising steps.", DefaultValueFactory = _ => 50 };
        var sampler = new Option<string?>("--sampler") { Description = "Sampler (default: the config's)." };
        var seed = new Option<long>("--seed") { Description = "Sample i uses noise stream seed+i.", DefaultValueFactory = _ => 0 };
        var target = new Option<string?>("--target-class") { Description = "Evaluator class whose rate is reported (default: the class of a class:NAME reward)." };
        var output = new Option<string>("--out") { Description = "Output folder.", DefaultValueFactory = _ => "out/sweep" };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace a previous sweep in --out." };
        var resume = RuntimeOptions.Resume("the base samples' batches and every finished (method, λ) point are");
        var onNan = RuntimeOptions.OnNan();
        var exactBudget = new Option<double>("--exact-particles-per-sample") { Description = "The exact tilt's particle budget per returned sample at each λ.", DefaultValueFactory = _ => 4.0 };
        var evaluatorDir = new Option<string?>("--evaluator") { Description = "Evaluator folder (default MODEL/evaluator): any ONNX classifier with a reward card (reward.json)." };
        var command = new Command("sweep", "KL (exact, fast and hybrid tilt) and Wasserstein (prox) alignment across λ, measured by the evaluator; table and plots.")
        {
            model, reward, lambdas, count, steps, sampler, seed, target, output, overwrite, resume, onNan, exactBudget, evaluatorDir,
        };
        var runtime = new RuntimeOptions();
        var tiltOptions = new TiltOptions();
        foreach (var option in runtime.All.Concat(tiltOptions.ExactOptions.Where(o => o.Name != "--max-particles-per-sample"))) command.Options.Add(option);
        command.SetAction(parse =>
        {
            var located = DiffusionModel.Locate(parse.GetValue(model)!);
            GenerateCommand.RefusePipeline(located, "sweep");
            string spec = parse.GetValue(reward)!, outDir = parse.GetValue(output)!;
            var lambdaValues = parse.GetValue(lambdas)!.Split(',').Select(v =>
                double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out double l) && l > 0 && double.IsFinite(l) ? l
                : throw new UsageException($"--lambdas: '{v}' is not a finite value > 0")).ToArray();
            int n = GenerateCommand.Positive(parse.GetValue(count), "--count");
            var s = GenerateCommand.CreateSampler(parse.GetValue(sampler), located.Config, GenerateCommand.Positive(parse.GetValue(steps), "--steps"), 0);
            var options = runtime.For(parse);
            using var denoiser = located.OpenDenoiser(options);
            var linear = RewardSpec.ParseLinear(spec, denoiser.SampleShape, located.Directory);
            using var evaluator = new ImageEvaluator(parse.GetValue(evaluatorDir) ?? Path.Combine(located.Directory, "evaluator"), options, denoiser.SampleShape,
                                                     tiltOptions.DataRange(parse, located));
            string? targetName = parse.GetValue(target) ?? (spec.StartsWith("class:", StringComparison.Ordinal) ? spec[6..].Split('@')[0] : null);
            int targetClass = targetName is null ? -1
                : int.TryParse(targetName, NumberStyles.None, CultureInfo.InvariantCulture, out int index) ? index
                : Array.FindIndex(evaluator.ClassNames, c => string.Equals(c, targetName, StringComparison.OrdinalIgnoreCase));
            if (targetName is not null && targetClass < 0) throw new UsageException($"--target-class '{targetName}': not one of {string.Join(", ", evaluator.ClassNames)}");
            var range = tiltOptions.DataRange(parse, located);
            double budget = parse.GetValue(exactBudget);
            if (!(budget >= 1) || budget > 1000) throw new UsageException($"--exact-particles-per-sample {budget}: expected a value in [1, 1000]");
            var exactSettings = tiltOptions.ReadExact(parse, maxParticles: budget) with { Count = n };
            exactSettings = exactSettings with { Smc = exactSettings.Smc with { Seed = parse.GetValue(seed) } };
            var nanPolicy = RuntimeOptions.NanPolicy(parse.GetValue(onNan));
            // Only now, with every input checked, is the output folder created (bad input writes nothing).
            using var job = OutputJob.Open(outDir, new OutputJobSettings { Overwrite = parse.GetValue(overwrite), Resume = parse.GetValue(resume) },
                                           RunPlan.For("sweep", located, GenerateCommand.PlanSettings(parse)));
            if (job.Resumed) Console.WriteLine($"resuming: finished base batches and (method, λ) points are taken from {BatchCheckpoint.PathOf(outDir)}");
            var report = new JobReport
            {
                Command = "sweep", Model = ReportModel.Of(located, denoiser), Run = new JobRun(job.PlanHash!),
                Blocks = new JsonObject { ["reward"] = spec, ["lambdas"] = new JsonArray(lambdaValues.Select(l => (JsonNode)l).ToArray()), ["count"] = n, ["sampler"] = s.Name, ["steps"] = s.Steps, ["seed"] = parse.GetValue(seed) },
            };
            var request = new GenerationRequest { Count = n, BatchSize = Math.Min(n, 256), Seed = parse.GetValue(seed), OnNonFinite = nanPolicy };
            int columns = Math.Min(8, n), size = denoiser.SampleSize;
            Row? baseRow = null;
            float[] baseGrid = [];
            double variance = double.NaN;
            long evaluations = 0;
            var rows = new List<Point>();
            job.Run(() =>
            {
                // The base samples' batches go to the checkpoint (a resumed sweep reads them back); each point is kept whole.
                var baseLaw = OnnxAlign.Alignment.ExactTilt.BaseLaw(denoiser, range);
                var baseRun = ProgressReporter.Run("base", p => Generation.Run(baseLaw, s, request with { Checkpoint = job.Checkpoint }, p));
                evaluations += baseRun.NetworkEvaluations;
                // Hybrid surrogate: data variance from the model folder, else from this base batch (DESIGN §1b).
                variance = located.DataMoments.Variance ?? Numerics.ColumnVariances(baseRun.Samples.AsSpan(0, baseRun.Count * size).ToArray(), size).Average();
                baseRow = Measure(evaluator, denoiser, linear, targetClass, baseRun.Samples, baseRun.Count, baseRun.Samples);
                baseGrid = First(baseRun.Samples, Math.Min(columns, baseRun.Count), size);
                Console.WriteLine($"base: target rate {baseRow.Rate:P1}, reward {baseRow.Reward:F3}");
                foreach (double lambda in lambdaValues)
                    foreach (string method in Methods)
                    {
                        var point = job.Remember(FormattableString.Invariant($"point_{method}_{lambda:R}.json"),
                                                 () => RunPoint(method, lambda, denoiser, range, s, linear, exactSettings, request, variance, evaluator, targetClass, baseRun, columns),
                                                 out bool kept);
                        rows.Add(point);
                        evaluations += point.NetworkEvaluations;
                        var row = point.Row;
                        Console.WriteLine($"  {method,-10} λ={lambda,-8:G3} target rate {row.Rate,7:P1}   reward {row.Reward,8:F3}   RMS distance to base {(double.IsNaN(row.Distance) ? "–" : row.Distance.ToString("F3", CultureInfo.InvariantCulture))}{(kept ? "   (kept from the interrupted run)" : "")}");
                    }
                return 0;
            }, fault => new JobOutput(report with { NetworkEvaluations = evaluations + fault.Finished.NetworkEvaluations },
                                      // The finished points are the finished work: their table, without the plots of a whole sweep.
                                      () => baseRow is null ? [] : WriteTables(outDir, located, spec, targetName, n, s, request.Seed, variance, range, baseRow, rows)));

            double gridLambda = lambdaValues[lambdaValues.Length / 2];
            bool image = ImageFiles.IsImage(denoiser.SampleShape);
            job.Finish(new JobOutput(report with { NetworkEvaluations = evaluations }, () =>
            {
                var files = WriteTables(outDir, located, spec, targetName, n, s, request.Seed, variance, range, baseRow!, rows).ToList();
                Plot(Path.Combine(outDir, "sweep.png"), rows.Select(r => (r.Method, r.Lambda, r.Row)).ToList(), baseRow!, targetName ?? "target");
                PlotDrift(Path.Combine(outDir, "drift.png"), rows.Where(r => r.Drift is not null).Select(r => (r.Lambda, r.Drift!)).ToList(), rows.FirstOrDefault(r => r.Drift is not null)?.DriftThreshold ?? 0.2);
                files.AddRange(["sweep.png", "drift.png"]);
                // Grid: base / KL exact / KL fast / KL hybrid / W2 rows for the first 8 seeds at the middle λ.
                if (image)
                {
                    var grid = new List<float>(baseGrid);
                    foreach (string method in Methods) grid.AddRange(rows.First(r => r.Method == method && r.Lambda == gridLambda).Grid);
                    ImageFiles.WriteGrid(Path.Combine(outDir, "grid.png"), grid.ToArray(), grid.Count / size, denoiser.SampleShape, columns);
                    files.Add("grid.png");
                }
                return files;
            }));
            Console.WriteLine($"wrote sweep.json, sweep.md, sweep.png, drift.png{(image ? $" and grid.png (rows: base, {string.Join(", ", Methods)} at λ={gridLambda:G3})" : "")} and report.json to {Path.GetFullPath(outDir)}");
            return 0;
        });
        return command;
    }

    private sealed record Row(double Rate, double Reward, double Distance)
    {
        public JsonObject? Extra { get; init; }

        public JsonObject ToJson()
        {
            var json = new JsonObject { ["target_rate"] = RunReport.Finite(Rate), ["reward"] = Reward, ["rms_distance_to_base"] = RunReport.Finite(Distance) };
            foreach (var (key, value) in Extra ?? []) json[key] = value?.DeepClone();
            return json;
        }
    }

    /// <summary>
    /// One (method, λ) point of the sweep: its figures, the first samples the grid shows, the fast tilt's drift and its
    /// cost. A sweep's job keeps each one in its checkpoint once measured, so that a resumed sweep redoes only the missing ones.
    /// </summary>
    private sealed record Point(string Method, double Lambda, Row Row, float[] Grid, double[]? Drift, double DriftThreshold, long NetworkEvaluations);

    private static Point RunPoint(string method, double lambda, IDenoiser denoiser, DataRange? range, Sampler s, LinearReward linear, ExactTiltSettings exactSettings,
                                  GenerationRequest request, double variance, ImageEvaluator evaluator, int targetClass, GenerationResult baseRun, int columns)
    {
        var theta = linear.Tilt(lambda);
        var extra = new JsonObject();
        GenerationResult result;
        double[]? drift = null;
        double threshold = 0;
        switch (method)
        {
            case "kl-exact":
            case "kl-fast":
                var run = ProgressReporter.Run($"KL {(method == "kl-exact" ? "exact" : "fast")} λ={lambda:G3}", p => KlAlignment.RunTilt(denoiser, range, s, theta,
                    new KlAlignmentSettings { Mode = method == "kl-exact" ? KlTiltMode.Exact : KlTiltMode.Fast, Exact = exactSettings }, request,
                    new SyncProgress<GenerationProgress>(p)));
                result = run.Samples;
                if (run.Exact is { } exact)
                {
                    extra["effective_sample_size"] = exact.Particles.EffectiveSampleSize;
                    extra["evaluations_per_effective_sample"] = exact.Particles.EvaluationsPerEffectiveSample;
                    extra["kl_divergence"] = RunReport.Finite(exact.KlDivergence.Value);
                    extra["kl_standard_error"] = RunReport.Finite(exact.KlDivergence.StandardError);
                    extra["distinct_samples"] = exact.DistinctSamples;
                }
                else
                {
                    var report = run.Drift!;
                    var direction = report.Directions[0];
                    drift = direction.Drifts.Select(v => direction.FinalStd > 0 ? v / direction.FinalStd : 0).ToArray();
                    threshold = report.Thresholds.Relative;
                    extra["drifting"] = report.IsDrifting;
                    extra["max_relative_drift"] = RunReport.Finite(report.MaxRelativeDrift);
                }
                break;
            case "kl-hybrid":
                result = ProgressReporter.Run($"KL hybrid λ={lambda:G3}", p => KlAlignment.RunTilt(denoiser, range, s, theta,
                    new KlAlignmentSettings { Mode = KlTiltMode.Hybrid, DataVariance = variance }, request, new SyncProgress<GenerationProgress>(p))).Samples;
                break;
            default:
                var moved = ProxStage.Apply(new ProxOracle(linear, new ProxSettings { Lambda = lambda, Box = ValueBox.Pixels }), baseRun.Samples.AsSpan(0, baseRun.Count * denoiser.SampleSize).ToArray()).Samples;
                result = new GenerationResult(moved, baseRun.FirstIndex, baseRun.Count, 0, TimeSpan.Zero, TimeSpan.Zero, baseRun.Indices);
                break;
        }
        // The exact tilt resamples SMC particles: its samples are not paired with the base seeds; nor are they where samples were skipped.
        bool paired = method != "kl-exact" && result.Indices.SequenceEqual(baseRun.Indices);
        var row = Measure(evaluator, denoiser, linear, targetClass, result.Samples, result.Count, paired ? baseRun.Samples : null) with { Extra = extra };
        return new Point(method, lambda, row, First(result.Samples, Math.Min(columns, result.Count), denoiser.SampleSize), drift, threshold,
                         method == "w2-prox" ? 0 : result.NetworkEvaluations);
    }

    /// <summary>The first <paramref name="count"/> samples (what the grid shows).</summary>
    private static float[] First(float[] samples, int count, int size) => samples.AsSpan(0, count * size).ToArray();

    /// <summary>sweep.json and sweep.md of the points measured; returns their names.</summary>
    private static string[] WriteTables(string outDir, DiffusionModel located, string spec, string? targetName, int n, Sampler s, long seed, double variance, DataRange? range,
                                        Row baseRow, IReadOnlyList<Point> rows)
    {
        var json = new JsonObject
        {
            ["model"] = located.OnnxPath, ["reward"] = spec, ["target_class"] = targetName, ["count"] = n, ["sampler"] = s.Name, ["steps"] = s.Steps,
            ["seed"] = seed, ["data_variance"] = variance, ["data_range"] = range is { } dr ? new JsonArray(dr.Low, dr.High) : null,
            ["base"] = baseRow.ToJson(),
            ["rows"] = new JsonArray(rows.Select(r => (JsonNode)new JsonObject { ["method"] = r.Method, ["lambda"] = r.Lambda, ["figures"] = r.Row.ToJson() }).ToArray()),
        };
        ReportJson.WriteFile(Path.Combine(outDir, "sweep.json"), json);
        var table = new StringBuilder($"| method | λ | target rate ({targetName ?? "none"}) | reward | RMS distance to base |\n|---|---|---|---|---|\n");
        table.Append(CultureInfo.InvariantCulture, $"| base | – | {baseRow.Rate:P1} | {baseRow.Reward:F3} | 0 |\n");
        foreach (var r in rows)
            table.Append(CultureInfo.InvariantCulture, $"| {r.Method} | {r.Lambda:G3} | {r.Row.Rate:P1} | {r.Row.Reward:F3} | {(double.IsNaN(r.Row.Distance) ? "–" : r.Row.Distance.ToString("F3", CultureInfo.InvariantCulture))} |\n");
        AtomicFile.WriteText(Path.Combine(outDir, "sweep.md"), table.ToString());
        return ["sweep.json", "sweep.md"];
    }

    /// <summary>The figures of <paramref name="count"/> samples; the RMS distance only against base samples of the same seeds.</summary>
    private static Row Measure(ImageEvaluator evaluator, IDenoiser denoiser, Reward reward, int targetClass, float[] samples, int count, float[]? baseSamples)
    {
        var values = samples.AsSpan(0, count * denoiser.SampleSize).ToArray();
        var evaluation = evaluator.Evaluate(values, count, denoiser.SampleShape);
        double rate = targetClass < 0 || count == 0 ? double.NaN : Enumerable.Range(0, count).Count(i => evaluation.Predicted(i) == targetClass) / (double)count;
        double distance = double.NaN;
        if (baseSamples is not null && values.Length > 0)
        {
            distance = 0;
            for (long i = 0; i < values.Length; i++) distance += (values[i] - baseSamples[i]) * (double)(values[i] - baseSamples[i]);
            distance = Math.Sqrt(distance / values.Length);
        }
        return new Row(rate, count == 0 ? double.NaN : reward.EvaluateBatch(values).Average(), distance);
    }

    /// <summary>The fast tilt's drift diagnostic along θ per step, one line per λ (DESIGN §1d): relative drift of x̂0 against the step's ᾱ_t.</summary>
    private static void PlotDrift(string path, List<(double Lambda, double[] Relative)> drifts, double relativeThreshold)
    {
        var plot = new ScottPlot.Plot();
        foreach (var (lambda, ys) in drifts)
        {
            var xs = Enumerable.Range(0, ys.Length).Select(i => (double)i).ToArray();
            plot.Add.Scatter(xs, ys).LegendText = $"λ = {lambda:G3}";
        }
        var threshold = plot.Add.HorizontalLine(relativeThreshold);
        threshold.LinePattern = ScottPlot.LinePattern.Dashed;
        threshold.LegendText = "threshold (judged where ᾱ_t ≥ 0.02)";
        plot.Title("fast tilt: drift of ⟨θ̂, x̂0_t⟩ − ⟨θ̂, x0⟩ (in sd of ⟨θ̂, x0⟩)");
        plot.XLabel("step");
        plot.YLabel("relative drift");
        plot.ShowLegend();
        Panels.Save(path, [plot], 720, 440);
    }

    /// <summary>Three panels side by side (target rate, reward, distance against log10 λ), one line per method.</summary>
    private static void Plot(string path, List<(string Method, double Lambda, Row Row)> rows, Row baseRow, string target)
    {
        var panels = new (string Title, Func<Row, double> Value)[]
        {
            ($"evaluator rate of {target}", r => r.Rate), ("reward (mean)", r => r.Reward), ("RMS distance to base samples", r => r.Distance),
        };
        var plots = new List<ScottPlot.Plot>();
        foreach (var (title, value) in panels)
        {
            var plot = new ScottPlot.Plot();
            foreach (string method in Methods)
            {
                var points = rows.Where(r => r.Method == method).OrderBy(r => r.Lambda).ToArray();
                plot.Add.Scatter(points.Select(r => Math.Log10(r.Lambda)).ToArray(), points.Select(r => value(r.Row)).ToArray()).LegendText = method;
            }
            var baseline = plot.Add.HorizontalLine(value(baseRow));
            baseline.LegendText = "base";
            baseline.LinePattern = ScottPlot.LinePattern.Dashed;
            plot.Title(title);
            plot.XLabel("log10 λ");
            plot.ShowLegend();
            plots.Add(plot);
        }
        Panels.Save(path, plots, 520);
    }
}
