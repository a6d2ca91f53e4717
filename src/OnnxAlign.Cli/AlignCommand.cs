using System.CommandLine;
using System.Text.Json.Nodes;
using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Guidance;
using OnnxAlign.IO;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>
/// <c>onnxalign align MODEL</c>: constrained alignment (<c>--constraint</c>, DESIGN §4) or inference-time DPO
/// (<c>--preferences DIR</c>); either way the result is one exact tilt, sampled like <c>generate</c>.
/// </summary>
internal static class AlignCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "Model file or folder." };
        var constraints = new Option<string[]>("--constraint") { Description = "REWARD>=B, REWARD<=B or REWARD==B with a linear reward; B a number, mean, or mean±Astd (relative to the base law). Repeatable.", AllowMultipleArgumentsPerToken = false };
        var method = new Option<string>("--method") { Description = "Dual method: newton (estimated reward covariance) or ascent (projected gradient).", DefaultValueFactory = _ => "newton" };
        var perIteration = new Option<int>("--samples-per-iteration") { Description = "Exactly tilted samples per dual iterate.", DefaultValueFactory = _ => 512 };
        var iterations = new Option<int>("--iterations") { Description = "Dual iteration limit.", DefaultValueFactory = _ => 40 };
        var preferences = new Option<string?>("--preferences") { Description = "Folder with preferred/ and rejected/ (pairs, matched by sorted name; images or samples.npy), or desirable/ and undesirable/ (unpaired, KTO-style)." };
        var objective = new Option<string?>("--objective") { Description = "Minimise Φ(E_q[z]) + β·KL: a convex feature function of linear features, e.g. sq-dist:0.2,0.4(channel-mean:0|channel-mean:1), cross-entropy:0.5,0.5(class:Trouser|class:Bag), lowrank:A.npy:sq-dist:..." };
        var beta = new Option<double>("--beta") { Description = "β: the KL weight of --objective, or DPO's β of --preferences.", DefaultValueFactory = _ => 1.0 };
        var l2 = new Option<double>("--l2") { Description = "L2 weight of the preference fit.", DefaultValueFactory = _ => 1e-3 };
        var count = new Option<int>("--count") { Description = "Samples of the aligned law to write.", DefaultValueFactory = _ => 16 };
        var steps = new Option<int>("--steps") { Description = "Denoising steps.", DefaultValueFactory = _ => 50 };
        var sampler = new Option<string?>("--sampler") { Description = "Sampler (default: the config's)." };
        var seed = new Option<long>("--seed") { Description = "Sample i uses noise stream seed+i; dual iterates use offset seeds.", DefaultValueFactory = _ => 0 };
        var batch = RuntimeOptions.Batch();
        var output = new Option<string>("--out") { Description = "Output folder.", DefaultValueFactory = _ => "out/align" };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace a previous run in --out." };
        var command = new Command("align", "Constrained alignment (several rewards with thresholds) or DPO from preference pairs, sampled exactly by one tilt.")
        {
            model, constraints, method, perIteration, iterations, preferences, objective, beta, l2, count, steps, sampler, seed, batch, output, overwrite,
        };
        var runtime = new RuntimeOptions();
        var tilt = new TiltOptions();
        foreach (var option in runtime.All.Concat(tilt.ModeOptions)) command.Options.Add(option);
        command.SetAction(parse =>
        {
            var located = DiffusionModel.Locate(parse.GetValue(model)!);
            GenerateCommand.RefusePipeline(located, "align");
            string outDir = parse.GetValue(output)!;
            int n = GenerateCommand.Positive(parse.GetValue(count), "--count");
            int b = GenerateCommand.Positive(parse.GetValue(batch), "--batch");
            var s = GenerateCommand.CreateSampler(parse.GetValue(sampler), located.Config, GenerateCommand.Positive(parse.GetValue(steps), "--steps"), 0);
            var constraintTexts = parse.GetValue(constraints) ?? [];
            string? preferenceDir = parse.GetValue(preferences), objectiveSpec = parse.GetValue(objective);
            if ((constraintTexts.Length > 0 ? 1 : 0) + (preferenceDir is null ? 0 : 1) + (objectiveSpec is null ? 0 : 1) != 1)
                throw new UsageException("give one of --constraint (one or more), --objective SPEC or --preferences DIR");
            var dualMethod = parse.GetValue(method) switch
            {
                "newton" => DualMethod.Newton,
                "ascent" => DualMethod.ProjectedAscent,
                var m => throw new UsageException($"--method '{m}': expected newton or ascent"),
            };
            long seedValue = parse.GetValue(seed);
            var finalMode = tilt.ReadMode(parse);
            if (finalMode == KlTiltMode.Hybrid) throw new UsageException("--tilt-mode hybrid applies to generate; align samples its tilt exact or fast");
            var exactSettings = tilt.ReadExact(parse);
            var range = tilt.DataRange(parse, located);
            using var network = located.OpenDenoiser(runtime.For(parse));
            // The dual iterates' tilts and the base statistics use the projected base law (DESIGN §1d); tilting it projects the tilt.
            var denoiser = ExactTilt.BaseLaw(network, range);
            var parsed = constraintTexts.Select(t => Constraint.Parse(t, denoiser.SampleShape, located.Directory)).ToArray();
            var report = new JsonObject { ["command"] = "align", ["model"] = located.OnnxPath, ["sampler"] = s.Name, ["steps"] = s.Steps, ["seed"] = seedValue };
            float[] theta;
            long setupEvaluations = 0;
            OutputLock? folderLock = null;
            using var releaseLock = new Releaser(() => folderLock?.Dispose());
            if (parsed.Length > 0)
            {
                var settings = new ConstrainedSettings
                {
                    Method = dualMethod, SamplesPerIteration = GenerateCommand.Positive(parse.GetValue(perIteration), "--samples-per-iteration"),
                    MaxIterations = GenerateCommand.Positive(parse.GetValue(iterations), "--iterations"), BatchSize = b, Seed = seedValue + 5_000_011,
                    Exact = finalMode == KlTiltMode.Exact ? exactSettings : null,
                };
                folderLock = SampleSetWriter.PrepareDirectory(outDir, parse.GetValue(overwrite));
                var result = ProgressReporter.Run("dual", progress => ConstrainedAlignment.Solve(denoiser, s, parsed, settings, it =>
                {
                    progress(new GenerationProgress(it.Iteration, settings.MaxIterations, it.Iteration, settings.MaxIterations));
                    Console.WriteLine($"  iterate {it.Iteration}: μ = [{string.Join(", ", it.Mu.Select(v => v.ToString("G4")))}], slacks [{string.Join(", ", it.Slacks.Select(v => v.ToString("G4")))}], KL {it.KlDivergence:G4}");
                }));
                report["constrained"] = ConstrainedReport(parsed, result, dualMethod);
                Plot(Path.Combine(outDir, "dual_trace.png"), parsed, result);
                setupEvaluations = result.NetworkEvaluations;
                if (result.Infeasible is { } which)
                {
                    report["status"] = "infeasible";
                    RunReport.Write(outDir, report);
                    Console.Error.WriteLine($"error: the constraints cannot be met together; '{which}' stays violated while its multiplier diverges (report.json, dual_trace.png in {Path.GetFullPath(outDir)})");
                    return 4;
                }
                theta = result.Theta;
                Console.WriteLine(result.Converged ? $"converged after {result.Trace.Count} iterates" : $"warning: not converged after {result.Trace.Count} iterates (see report.json)");
            }
            else if (objectiveSpec is not null)
            {
                var features = RewardSpec.Parse(objectiveSpec, denoiser.SampleShape, located.Directory) as FeatureReward
                    ?? throw new UsageException($"--objective '{objectiveSpec}': expected a function of features, e.g. sq-dist:T1,T2(LINEAR|LINEAR)");
                if (features.Function.Curvature != Curvature.Convex)
                    throw new UsageException($"--objective '{objectiveSpec}': Φ = {features.Function.Name} is not convex (convex: sq-dist, cross-entropy, variance, quadratic with M ⪰ 0, …)");
                double betaValue = parse.GetValue(beta);
                if (!(betaValue > 0) || !double.IsFinite(betaValue)) throw new UsageException($"--beta {betaValue}: expected a finite value > 0");
                folderLock = SampleSetWriter.PrepareDirectory(outDir, parse.GetValue(overwrite));
                var settings = new DualAveragingSettings
                {
                    Beta = betaValue, MaxIterations = GenerateCommand.Positive(parse.GetValue(iterations), "--iterations"),
                    SamplesPerIteration = GenerateCommand.Positive(parse.GetValue(perIteration), "--samples-per-iteration"), BatchSize = b, Seed = seedValue + 5_000_011,
                    Exact = finalMode == KlTiltMode.Exact ? exactSettings : null,
                };
                var result = ProgressReporter.Run("dual averaging", progress => DistributionalAlignment.Solve(denoiser, s, features, settings, it =>
                {
                    progress(new GenerationProgress(it.Iteration, settings.MaxIterations, it.Iteration, settings.MaxIterations));
                    Console.WriteLine($"  iterate {it.Iteration}: E[z] = [{string.Join(", ", it.Moments.Select(v => v.ToString("G4")))}], objective {it.Objective:G5}, ‖Δθ‖ {it.ThetaChange:G3}");
                }));
                theta = result.Theta;
                setupEvaluations = result.NetworkEvaluations;
                report["objective"] = new JsonObject
                {
                    ["spec"] = objectiveSpec, ["beta"] = betaValue, ["converged"] = result.Converged, ["u"] = new JsonArray(result.U.Select(v => (JsonNode)v).ToArray()),
                    ["trace"] = new JsonArray(result.Trace.Select(it => (JsonNode)new JsonObject
                    {
                        ["iteration"] = it.Iteration, ["moments"] = new JsonArray(it.Moments.Select(v => (JsonNode)v).ToArray()),
                        ["objective"] = it.Objective, ["kl_divergence"] = it.KlDivergence, ["theta_change"] = it.ThetaChange,
                    }).ToArray()),
                };
                var iterationsAxis = result.Trace.Select(t => (double)t.Iteration).ToArray();
                var objectivePlot = new ScottPlot.Plot();
                objectivePlot.Add.Scatter(iterationsAxis, result.Trace.Select(t => t.Objective).ToArray());
                objectivePlot.Title("Φ(E_q z) + β·KL");
                var changePlot = new ScottPlot.Plot();
                changePlot.Add.Scatter(iterationsAxis, result.Trace.Select(t => t.ThetaChange).ToArray());
                changePlot.Title("‖θ_k − θ_{k−1}‖");
                foreach (var p in new[] { objectivePlot, changePlot }) p.XLabel("iterate");
                Panels.Save(Path.Combine(outDir, "dual_trace.png"), [objectivePlot, changePlot], 560);
                Console.WriteLine(result.Converged ? $"converged after {result.Trace.Count} iterates" : $"warning: not converged after {result.Trace.Count} iterates (see report.json)");
            }
            else
            {
                var fit = FitPreferences(preferenceDir!, denoiser.SampleShape, parse.GetValue(beta), parse.GetValue(l2));
                folderLock = SampleSetWriter.PrepareDirectory(outDir, parse.GetValue(overwrite));
                theta = fit.Theta;
                report["preferences"] = new JsonObject
                {
                    ["folder"] = preferenceDir, ["beta"] = parse.GetValue(beta), ["l2"] = parse.GetValue(l2), ["theta_norm"] = Math.Sqrt(theta.Sum(v => (double)v * v)),
                    ["intercept"] = fit.Intercept, ["train_count"] = fit.TrainCount, ["train_accuracy"] = fit.TrainAccuracy,
                    ["held_out_count"] = fit.HeldOutCount, ["held_out_accuracy"] = fit.HeldOutAccuracy,
                };
                Console.WriteLine($"preference fit: train accuracy {fit.TrainAccuracy:P1} on {fit.TrainCount}, held-out {fit.HeldOutAccuracy:P1} on {fit.HeldOutCount}");
            }
            var request = new GenerationRequest { Count = n, BatchSize = b, Seed = seedValue };
            // The chosen tilt, sampled by the library's KL aligner: exactly by default (SMC with exact weights: the
            // returned law is p·e^{⟨θ,x⟩} whatever the network's error), or the fast projected tilt.
            var final = ProgressReporter.Run(finalMode == KlTiltMode.Exact ? "generate (aligned, exact tilt)" : "generate (aligned)", progress =>
                KlAlignment.RunTilt(network, range, s, theta, new KlAlignmentSettings { Mode = finalMode, Exact = exactSettings }, request,
                                    new SyncProgress<GenerationProgress>(progress)));
            var samples = final.Samples;
            if (final.Exact is { } exact)
                report["final_tilt"] = new JsonObject
                {
                    ["mode"] = "exact", ["algorithm"] = exact.Method, ["effective_sample_size"] = exact.Particles.EffectiveSampleSize,
                    ["particles"] = exact.Particles.Count, ["evaluations_per_effective_sample"] = exact.Particles.EvaluationsPerEffectiveSample,
                    ["kl_divergence"] = AlignmentReport.Finite(exact.KlDivergence.Value), ["kl_standard_error"] = AlignmentReport.Finite(exact.KlDivergence.StandardError),
                    ["distinct_samples"] = exact.DistinctSamples,
                    ["iterates"] = "every dual iterate was sampled by the exact tilt too (its moments and KL are of q_θ itself)",
                };
            else
                report["final_tilt"] = new JsonObject { ["mode"] = "fast", ["drifting"] = final.Drift!.IsDrifting };
            NpyFile.Write(Path.Combine(outDir, "theta.npy"), theta, denoiser.SampleShape);
            SampleSetWriter.BeginReplacing(outDir);
            var files = SampleSetWriter.Write(outDir, samples.Samples, samples.Count, 0, denoiser.SampleShape).Append("theta.npy").ToList();
            SampleSetWriter.RemoveStale(outDir, files);
            report["network_evaluations"] = samples.NetworkEvaluations + setupEvaluations;
            report["statistics"] = RunReport.Statistics(samples.Samples, denoiser.SampleSize);
            report["files"] = new JsonArray(files.Select(f => (JsonNode)f).ToArray());
            RunReport.Write(outDir, report);
            Console.WriteLine($"wrote {n} aligned samples to {Path.GetFullPath(outDir)} ({string.Join(", ", RunReport.Summary(files))})");
            return 0;
        });
        return command;
    }

    private static JsonObject ConstrainedReport(IReadOnlyList<Constraint> constraints, ConstrainedResult result, DualMethod method)
    {
        JsonArray Array(IEnumerable<double> values) => new(values.Select(v => (JsonNode)v).ToArray());
        return new JsonObject
        {
            ["method"] = method == DualMethod.Newton ? "newton" : "projected-ascent",
            ["constraints"] = new JsonArray(constraints.Select((c, i) => (JsonNode)new JsonObject
            {
                ["text"] = c.Text, ["threshold"] = result.Thresholds[i], ["base_mean"] = result.BaseMeans[i], ["base_std"] = result.BaseStds[i],
                ["multiplier"] = result.Mu[i], ["fresh_mean"] = result.Check.Expected[i], ["fresh_standard_error"] = result.Check.StandardErrors[i],
                ["fresh_slack"] = result.Check.Slacks[i], ["met"] = result.Check.Slacks[i] >= -3 * result.Check.StandardErrors[i],
            }).ToArray()),
            ["converged"] = result.Converged,
            ["infeasible_constraint"] = result.Infeasible,
            ["kl_divergence"] = result.Trace[^1].KlDivergence,
            ["trace"] = new JsonArray(result.Trace.Select(it => (JsonNode)new JsonObject
            {
                ["iteration"] = it.Iteration, ["mu"] = Array(it.Mu), ["expected"] = Array(it.Expected), ["standard_errors"] = Array(it.StandardErrors),
                ["slacks"] = Array(it.Slacks), ["kl_divergence"] = it.KlDivergence,
            }).ToArray()),
            ["network_evaluations"] = result.NetworkEvaluations,
        };
    }

    /// <summary>Pairs from preferred/ + rejected/, or unpaired labels from desirable/ + undesirable/.</summary>
    private static PreferenceFit FitPreferences(string dir, IReadOnlyList<int> shape, double beta, double l2)
    {
        if (!(beta > 0) || !double.IsFinite(beta)) throw new UsageException($"--beta {beta}: expected a finite value > 0");
        if (!(l2 > 0) || !double.IsFinite(l2)) throw new UsageException($"--l2 {l2}: expected a finite value > 0");
        int size = shape.Aggregate(1, (a, b) => a * b);
        SampleSet Read(string sub)
        {
            var set = UsageException.ForFlag("--preferences", () => SampleSetReader.Read(Path.Combine(dir, sub)));
            if (set.Samples.Length != set.Count * size) throw new ConfigException($"{Path.Combine(dir, sub)}: samples of shape [{string.Join(", ", set.SampleShape)}], the model's are [{string.Join(", ", shape)}]");
            return set;
        }
        if (Directory.Exists(Path.Combine(dir, "preferred")) && Directory.Exists(Path.Combine(dir, "rejected")))
        {
            var (w, l) = (Read("preferred"), Read("rejected"));
            if (w.Count != l.Count) throw new ConfigException($"{dir}: {w.Count} preferred but {l.Count} rejected samples; pairs are matched by sorted name");
            return PreferenceAlignment.FitPairs(w.Samples, l.Samples, size, beta, l2);
        }
        if (Directory.Exists(Path.Combine(dir, "desirable")) && Directory.Exists(Path.Combine(dir, "undesirable")))
        {
            var (good, bad) = (Read("desirable"), Read("undesirable"));
            return PreferenceAlignment.FitUnpaired([.. good.Samples, .. bad.Samples], [.. Enumerable.Repeat(true, good.Count), .. Enumerable.Repeat(false, bad.Count)], size, beta, l2);
        }
        throw new ConfigException($"--preferences {dir}: expected subfolders preferred/ and rejected/ (pairs) or desirable/ and undesirable/ (unpaired)");
    }

    /// <summary>Two panels: the multipliers and the slacks (in base standard deviations) per iterate.</summary>
    private static void Plot(string path, IReadOnlyList<Constraint> constraints, ConstrainedResult result)
    {
        var iterations = result.Trace.Select(t => (double)t.Iteration).ToArray();
        var plots = new List<ScottPlot.Plot>();
        for (int panel = 0; panel < 2; panel++)
        {
            var plot = new ScottPlot.Plot();
            for (int i = 0; i < constraints.Count; i++)
            {
                var values = result.Trace.Select(t => panel == 0 ? t.Mu[i] : t.Slacks[i] / Math.Max(result.BaseStds[i], 1e-12)).ToArray();
                plot.Add.Scatter(iterations, values).LegendText = constraints[i].Text;
            }
            if (panel == 1) plot.Add.HorizontalLine(0).LinePattern = ScottPlot.LinePattern.Dashed;
            plot.Title(panel == 0 ? "dual multipliers μ" : "slack / base std (≥ 0: met)");
            plot.XLabel("iterate");
            plot.ShowLegend();
            plots.Add(plot);
        }
        Panels.Save(path, plots, 560);
    }

    /// <summary>Runs an action on dispose (the output lock taken in one of the branches).</summary>
    private sealed class Releaser(Action release) : IDisposable
    {
        public void Dispose() => release();
    }
}
