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
        var exactBudget = new Option<double>("--exact-particles-per-sample") { Description = "The exact tilt's particle budget per returned sample at each λ.", DefaultValueFactory = _ => 4.0 };
        var evaluatorDir = new Option<string?>("--evaluator") { Description = "Evaluator folder (default MODEL/evaluator): any ONNX classifier with a reward card (reward.json)." };
        var command = new Command("sweep", "KL (exact, fast and hybrid tilt) and Wasserstein (prox) alignment across λ, measured by the evaluator; table and plots.")
        {
            model, reward, lambdas, count, steps, sampler, seed, target, output, overwrite, exactBudget, evaluatorDir,
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
            using var folderLock = SampleSetWriter.PrepareDirectory(outDir, parse.GetValue(overwrite));

            var request = new GenerationRequest { Count = n, BatchSize = Math.Min(n, 256), Seed = parse.GetValue(seed) };
            var baseLaw = OnnxAlign.Alignment.ExactTilt.BaseLaw(denoiser, range);
            var baseRun = ProgressReporter.Run("base", p => Generation.Run(baseLaw, s, request, p));
            // Hybrid surrogate: data variance from the model folder, else from this base batch (DESIGN §1b).
            double variance = located.DataMoments.Variance ?? Numerics.ColumnVariances(baseRun.Samples, denoiser.SampleSize).Average();
            var baseRow = Measure(evaluator, denoiser, linear, targetClass, baseRun.Samples, baseRun.Samples, n);
            Console.WriteLine($"base: target rate {baseRow.Rate:P1}, reward {baseRow.Reward:F3}");

            var rows = new List<(string Method, double Lambda, Row Row, float[] Samples)>();
            var drifts = new List<(double Lambda, OnnxAlign.Estimation.DriftReport Report)>();
            foreach (double lambda in lambdaValues)
                foreach (string method in Methods)
                {
                    var theta = linear.Tilt(lambda);
                    var extra = new JsonObject();
                    float[] samples;
                    switch (method)
                    {
                        case "kl-exact":
                        case "kl-fast":
                            var run = ProgressReporter.Run($"KL {(method == "kl-exact" ? "exact" : "fast")} λ={lambda:G3}", p => KlAlignment.RunTilt(denoiser, range, s, theta,
                                new KlAlignmentSettings { Mode = method == "kl-exact" ? KlTiltMode.Exact : KlTiltMode.Fast, Exact = exactSettings }, request,
                                new SyncProgress<GenerationProgress>(p)));
                            samples = run.Samples.Samples;
                            if (run.Exact is { } exact)
                            {
                                extra["effective_sample_size"] = exact.Particles.EffectiveSampleSize;
                                extra["evaluations_per_effective_sample"] = exact.Particles.EvaluationsPerEffectiveSample;
                                extra["kl_divergence"] = AlignmentReport.Finite(exact.KlDivergence.Value);
                                extra["kl_standard_error"] = AlignmentReport.Finite(exact.KlDivergence.StandardError);
                                extra["distinct_samples"] = exact.DistinctSamples;
                            }
                            else
                            {
                                drifts.Add((lambda, run.Drift!));
                                extra["drifting"] = run.Drift!.IsDrifting;
                                extra["max_relative_drift"] = AlignmentReport.Finite(run.Drift!.MaxRelativeDrift);
                            }
                            break;
                        case "kl-hybrid":
                            samples = ProgressReporter.Run($"KL hybrid λ={lambda:G3}", p => KlAlignment.RunTilt(denoiser, range, s, theta,
                                new KlAlignmentSettings { Mode = KlTiltMode.Hybrid, DataVariance = variance }, request, new SyncProgress<GenerationProgress>(p))).Samples.Samples;
                            break;
                        default:
                            samples = ProxStage.Apply(new ProxOracle(linear, new ProxSettings { Lambda = lambda, Box = ValueBox.Pixels }), baseRun.Samples).Samples;
                            break;
                    }
                    // The exact tilt resamples SMC particles: its samples are not paired with the base seeds.
                    var row = Measure(evaluator, denoiser, linear, targetClass, samples, method == "kl-exact" ? null : baseRun.Samples, n) with { Extra = extra };
                    rows.Add((method, lambda, row, samples));
                    Console.WriteLine($"  {method,-10} λ={lambda,-8:G3} target rate {row.Rate,7:P1}   reward {row.Reward,8:F3}   RMS distance to base {(double.IsNaN(row.Distance) ? "–" : row.Distance.ToString("F3", CultureInfo.InvariantCulture))}");
                }

            var json = new JsonObject
            {
                ["model"] = located.OnnxPath, ["reward"] = spec, ["target_class"] = targetName, ["count"] = n, ["sampler"] = s.Name, ["steps"] = s.Steps,
                ["seed"] = request.Seed, ["data_variance"] = variance, ["data_range"] = range is { } dr ? new JsonArray(dr.Low, dr.High) : null,
                ["base"] = baseRow.ToJson(),
                ["rows"] = new JsonArray(rows.Select(r => (JsonNode)new JsonObject { ["method"] = r.Method, ["lambda"] = r.Lambda, ["figures"] = r.Row.ToJson() }).ToArray()),
            };
            ReportJson.WriteFile(Path.Combine(outDir, "sweep.json"), json);
            var table = new StringBuilder($"| method | λ | target rate ({targetName ?? "none"}) | reward | RMS distance to base |\n|---|---|---|---|---|\n");
            table.Append(CultureInfo.InvariantCulture, $"| base | – | {baseRow.Rate:P1} | {baseRow.Reward:F3} | 0 |\n");
            foreach (var r in rows)
                table.Append(CultureInfo.InvariantCulture, $"| {r.Method} | {r.Lambda:G3} | {r.Row.Rate:P1} | {r.Row.Reward:F3} | {(double.IsNaN(r.Row.Distance) ? "–" : r.Row.Distance.ToString("F3", CultureInfo.InvariantCulture))} |\n");
            AtomicFile.WriteText(Path.Combine(outDir, "sweep.md"), table.ToString());
            Plot(Path.Combine(outDir, "sweep.png"), rows.Select(r => (r.Method, r.Lambda, r.Row)).ToList(), baseRow, targetName ?? "target");
            PlotDrift(Path.Combine(outDir, "drift.png"), drifts);

            // Grid: base / KL exact / KL fast / KL hybrid / W2 rows for the first 8 seeds at the middle λ.
            double gridLambda = lambdaValues[lambdaValues.Length / 2];
            int columns = Math.Min(8, n), size = denoiser.SampleSize;
            if (ImageFiles.IsImage(denoiser.SampleShape))
            {
                var grid = new List<float>(baseRun.Samples.AsSpan(0, columns * size).ToArray());
                foreach (string method in Methods)
                    grid.AddRange(rows.First(r => r.Method == method && r.Lambda == gridLambda).Samples.AsSpan(0, columns * size).ToArray());
                ImageFiles.WriteGrid(Path.Combine(outDir, "grid.png"), grid.ToArray(), grid.Count / size, denoiser.SampleShape, columns);
            }
            Console.WriteLine($"wrote sweep.json, sweep.md, sweep.png, drift.png{(ImageFiles.IsImage(denoiser.SampleShape) ? $" and grid.png (rows: base, {string.Join(", ", Methods)} at λ={gridLambda:G3})" : "")} to {Path.GetFullPath(outDir)}");
            return 0;
        });
        return command;
    }

    private sealed record Row(double Rate, double Reward, double Distance)
    {
        public JsonObject? Extra { get; init; }

        public JsonObject ToJson()
        {
            var json = new JsonObject { ["target_rate"] = AlignmentReport.Finite(Rate), ["reward"] = Reward, ["rms_distance_to_base"] = AlignmentReport.Finite(Distance) };
            foreach (var (key, value) in Extra ?? []) json[key] = value?.DeepClone();
            return json;
        }
    }

    private static Row Measure(ImageEvaluator evaluator, IDenoiser denoiser, Reward reward, int targetClass, float[] samples, float[]? baseSamples, int n)
    {
        var evaluation = evaluator.Evaluate(samples, n, denoiser.SampleShape);
        double rate = targetClass < 0 ? double.NaN : Enumerable.Range(0, n).Count(i => evaluation.Predicted(i) == targetClass) / (double)n;
        double distance = double.NaN;
        if (baseSamples is not null)
        {
            distance = 0;
            for (long i = 0; i < samples.Length; i++) distance += (samples[i] - baseSamples[i]) * (double)(samples[i] - baseSamples[i]);
            distance = Math.Sqrt(distance / samples.Length);
        }
        return new Row(rate, reward.EvaluateBatch(samples).Average(), distance);
    }

    /// <summary>The fast tilt's drift diagnostic along θ per step, one line per λ (DESIGN §1d): relative drift of x̂0 against the step's ᾱ_t.</summary>
    private static void PlotDrift(string path, List<(double Lambda, OnnxAlign.Estimation.DriftReport Report)> drifts)
    {
        var plot = new ScottPlot.Plot();
        foreach (var (lambda, report) in drifts)
        {
            var theta = report.Directions[0];
            var xs = Enumerable.Range(0, theta.Drifts.Length).Select(i => (double)i).ToArray();
            var ys = theta.Drifts.Select(v => theta.FinalStd > 0 ? v / theta.FinalStd : 0).ToArray();
            plot.Add.Scatter(xs, ys).LegendText = $"λ = {lambda:G3}";
        }
        var threshold = plot.Add.HorizontalLine(drifts.Count > 0 ? drifts[0].Report.Thresholds.Relative : 0.2);
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
