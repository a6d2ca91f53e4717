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
            string? targetName = parse.GetValue(target) ?? AlignmentSweep.ClassOf(spec);
            int targetClass = targetName is null ? -1 : evaluator.ClassIndex(targetName);
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
            var settings = new AlignmentSweepSettings
            {
                Lambdas = lambdaValues, Count = n, Seed = parse.GetValue(seed), TargetClass = targetClass, Exact = exactSettings, OnNonFinite = nanPolicy,
                DataVariance = located.DataMoments.Variance,
            };
            int columns = Math.Min(8, n), size = denoiser.SampleSize;
            // What a stopped sweep leaves: the base figures and the finished points, reported as the sweep goes.
            SweepFigures? baseFigures = null;
            double variance = double.NaN;
            long evaluations = 0;
            var points = new List<SweepPoint>();
            var done = job.Run(() => ProgressReporter.RunStages(stage =>
            {
                string? current = null;
                Action<GenerationProgress>? bar = null;
                return AlignmentSweep.Run(denoiser, range, s, linear, evaluator, settings, job.Checkpoint, new InlineProgress<SweepProgress>(p =>
                {
                    if (p.Sampling is { } sampling)
                    {
                        if (p.Stage != current) (current, bar) = (p.Stage, stage(p.Stage));
                        bar!(sampling);
                    }
                    if (p.Sampling is null) evaluations = p.NetworkEvaluations;
                    if (p.BaseFigures is { } figures)
                    {
                        (baseFigures, variance) = (figures, p.DataVariance);
                        ProgressReporter.WriteLine($"base: target rate {figures.TargetRate:P1}, reward {figures.Reward:F3}");
                    }
                    if (p.Point is { } point)
                    {
                        points.Add(point);
                        var f = point.Figures;
                        ProgressReporter.WriteLine($"  {point.Method,-10} λ={point.Lambda,-8:G3} target rate {f.TargetRate,7:P1}   reward {f.Reward,8:F3}   RMS distance to base {Distance(f)}{(p.Recalled ? "   (kept from the interrupted run)" : "")}");
                    }
                }));
            }), fault => new JobOutput(report with { NetworkEvaluations = evaluations + fault.Finished.NetworkEvaluations },
                                       // The finished points are the finished work: their table, without the plots of a whole sweep.
                                       () => baseFigures is null ? [] : WriteTables(outDir, located, spec, targetName, settings, s, variance, range, baseFigures, points)));

            double gridLambda = lambdaValues[lambdaValues.Length / 2];
            bool image = ImageFiles.IsImage(denoiser.SampleShape);
            job.Finish(new JobOutput(report with { NetworkEvaluations = done.NetworkEvaluations }, () =>
            {
                var files = WriteTables(outDir, located, spec, targetName, settings, s, done.DataVariance, range, done.Base, done.Points).ToList();
                Plot(Path.Combine(outDir, "sweep.png"), done.Points, done.Base, targetName ?? "target");
                PlotDrift(Path.Combine(outDir, "drift.png"), done.Points.Where(p => p.Drift is not null).ToList(), done.Points.FirstOrDefault(p => p.Drift is not null)?.DriftThreshold ?? 0.2);
                files.AddRange(["sweep.png", "drift.png"]);
                // Grid: base / KL exact / KL fast / KL hybrid / W2 rows for the first 8 seeds at the middle λ.
                if (image)
                {
                    var grid = new List<float>(done.BaseGrid);
                    foreach (string method in AlignmentSweep.Methods) grid.AddRange(done.Points.First(p => p.Method == method && p.Lambda == gridLambda).Grid);
                    ImageFiles.WriteGrid(Path.Combine(outDir, "grid.png"), grid.ToArray(), grid.Count / size, denoiser.SampleShape, columns);
                    files.Add("grid.png");
                }
                return files;
            }));
            Console.WriteLine($"wrote sweep.json, sweep.md, sweep.png, drift.png{(image ? $" and grid.png (rows: base, {string.Join(", ", AlignmentSweep.Methods)} at λ={gridLambda:G3})" : "")} and report.json to {Path.GetFullPath(outDir)}");
            return 0;
        });
        return command;
    }

    /// <summary>sweep.json and sweep.md of the points measured; returns their names.</summary>
    private static string[] WriteTables(string outDir, DiffusionModel located, string spec, string? targetName, AlignmentSweepSettings settings, Sampler s,
                                        double variance, DataRange? range, SweepFigures baseFigures, IReadOnlyList<SweepPoint> points)
    {
        ReportJson.WriteFile(Path.Combine(outDir, "sweep.json"),
                             ReportJson.ToNode(AlignmentSweep.Table(located.OnnxPath, spec, targetName, settings, s, range, variance, baseFigures, points)));
        var table = new StringBuilder($"| method | λ | target rate ({targetName ?? "none"}) | reward | RMS distance to base |\n|---|---|---|---|---|\n");
        table.Append(CultureInfo.InvariantCulture, $"| base | – | {baseFigures.TargetRate:P1} | {baseFigures.Reward:F3} | 0 |\n");
        foreach (var p in points)
            table.Append(CultureInfo.InvariantCulture, $"| {p.Method} | {p.Lambda:G3} | {p.Figures.TargetRate:P1} | {p.Figures.Reward:F3} | {Distance(p.Figures)} |\n");
        AtomicFile.WriteText(Path.Combine(outDir, "sweep.md"), table.ToString());
        return ["sweep.json", "sweep.md"];
    }

    private static string Distance(SweepFigures f) => double.IsNaN(f.RmsDistanceToBase) ? "–" : f.RmsDistanceToBase.ToString("F3", CultureInfo.InvariantCulture);

    /// <summary>The fast tilt's drift diagnostic along θ per step, one line per λ (DESIGN §1d): relative drift of x̂0 against the step's ᾱ_t.</summary>
    private static void PlotDrift(string path, IReadOnlyList<SweepPoint> drifts, double relativeThreshold)
    {
        var plot = new ScottPlot.Plot();
        foreach (var (lambda, ys) in drifts.Select(p => (p.Lambda, p.Drift!)))
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
    private static void Plot(string path, IReadOnlyList<SweepPoint> points, SweepFigures baseFigures, string target)
    {
        var panels = new (string Title, Func<SweepFigures, double> Value)[]
        {
            ($"evaluator rate of {target}", f => f.TargetRate), ("reward (mean)", f => f.Reward), ("RMS distance to base samples", f => f.RmsDistanceToBase),
        };
        var plots = new List<ScottPlot.Plot>();
        foreach (var (title, value) in panels)
        {
            var plot = new ScottPlot.Plot();
            foreach (string method in AlignmentSweep.Methods)
            {
                var line = points.Where(p => p.Method == method).OrderBy(p => p.Lambda).ToArray();
                plot.Add.Scatter(line.Select(p => Math.Log10(p.Lambda)).ToArray(), line.Select(p => value(p.Figures)).ToArray()).LegendText = method;
            }
            var baseline = plot.Add.HorizontalLine(value(baseFigures));
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
