using System.CommandLine;
using System.Text.Json.Nodes;
using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Guidance;
using OnnxAlign.IO;
using OnnxAlign.Jobs;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>
/// <c>onnxalign align MODEL</c>: constrained alignment (<c>--constraint</c>, DESIGN §4), a distributional objective
/// (<c>--objective</c>, §5) or inference-time DPO (<c>--preferences DIR</c>); each is a library entry point
/// (<see cref="ConstrainedAlignment.Run"/>, <see cref="DistributionalAlignment.Run"/>, <see cref="PreferenceAlignment.Run"/>)
/// whose result is one tilt, sampled like <c>generate</c>. This class parses, prints, writes and maps exit codes only.
/// <c>onnxalign plan align MODEL …</c> takes the same command line and puts the dual into a plan (DESIGN §10, <see cref="Plan"/>).
/// </summary>
internal static class AlignCommand
{
    public static Command Create()
    {
        var (command, o) = Build("align", "Constrained alignment (several rewards with thresholds), a distributional objective or DPO from preference pairs, sampled exactly by one tilt.",
                                 "Output folder.", "out/align");
        command.SetAction(parse => Run(parse, o));
        return command;
    }

    /// <summary>
    /// <c>plan align</c>: align's command line; the dual (or the preference fit) runs once, its θ goes beside the plan
    /// (hashed in it) and its report block into the plan's set-up, and the plan's shards sample the tilt through
    /// generate's <c>--tilt</c> path (DESIGN §10).
    /// </summary>
    public static Command CreatePlan()
    {
        var (command, o) = Build("align", "Run align's dual (or preference fit) once and write a plan whose shards (generate --plan PLAN.json --shard i/n) sample its tilt; θ is written beside the plan as PLAN.theta.npy.",
                                 "The plan file to write.", "plan.json");
        command.SetAction(parse => Plan(parse, o));
        return command;
    }

    /// <summary>The command's options.</summary>
    private sealed record AlignOptions(Argument<string> Model, Option<string[]> Constraints, Option<string> Method, Option<int> PerIteration, Option<int> Iterations,
                                       Option<string?> Preferences, Option<string?> Objective, Option<double> Beta, Option<double> L2, Option<int> Count, Option<int> Steps,
                                       Option<string?> Sampler, Option<long> Seed, Option<int> Batch, Option<string> Out, Option<bool> Overwrite,
                                       Option<bool> Resume, Option<string> OnNan, RuntimeOptions Runtime, TiltOptions Tilt)
    {
        /// <summary>The options that choose the tilt: align's own, which a plan's shards (generate) do not take.</summary>
        public IEnumerable<Option> DualOptions => [Constraints, Method, PerIteration, Iterations, Preferences, Objective, Beta, L2];
    }

    private static (Command Command, AlignOptions Options) Build(string name, string description, string outDescription, string outDefault)
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
        var output = new Option<string>("--out") { Description = outDescription, DefaultValueFactory = _ => outDefault };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace a previous run in --out." };
        var resume = RuntimeOptions.Resume("the dual's solution and the final tilt's finished batches (or SMC systems) are");
        var onNan = RuntimeOptions.OnNan();
        var command = new Command(name, description)
        {
            model, constraints, method, perIteration, iterations, preferences, objective, beta, l2, count, steps, sampler, seed, batch, output, overwrite, resume, onNan,
        };
        var runtime = new RuntimeOptions();
        var tilt = new TiltOptions();
        foreach (var option in runtime.All.Concat(tilt.ModeOptions)) command.Options.Add(option);
        return (command, new AlignOptions(model, constraints, method, perIteration, iterations, preferences, objective, beta, l2, count, steps, sampler, seed, batch,
                                          output, overwrite, resume, onNan, runtime, tilt));
    }

    /// <summary>What the command line asks for, checked before anything is written: one of the three problems and how its tilt is sampled.</summary>
    private sealed record Job(DiffusionModel Model, Sampler Sampler, DataRange? Range, GenerationRequest Request, KlTiltMode Mode,
                              Constraint[] Constraints, ConstrainedSettings? Constrained,
                              FeatureReward? Features, string? ObjectiveSpec, DualAveragingSettings? Averaging,
                              PreferenceData? Preferences, PreferenceSettings? PreferenceSettings)
    {
        /// <summary>The block of report.json the problem writes (and a plan's set-up records).</summary>
        public string Key => Constraints.Length > 0 ? "constrained" : Features is not null ? "objective" : "preferences";

        /// <summary>The exact tilt's settings of the final samples (the iterates' where they are exact too).</summary>
        public ExactTiltSettings? Exact => Constrained?.Exact ?? Averaging?.Exact ?? PreferenceSettings?.Exact;
    }

    /// <summary>What the dual (or the preference fit) found, as align writes it: θ, its report block and cost.</summary>
    /// <param name="Key">The report block's name (<see cref="Job.Key"/>).</param>
    /// <param name="Block">The block (constrained, objective or preferences).</param>
    /// <param name="Theta">The chosen tilt.</param>
    /// <param name="NetworkEvaluations">Network evaluations of the dual.</param>
    /// <param name="Infeasible">The constraint that cannot be met, or null.</param>
    /// <param name="Resumed">Read back from the checkpoint of an interrupted run, not solved again.</param>
    private sealed record Solution(string Key, JsonNode Block, float[] Theta, long NetworkEvaluations, string? Infeasible, bool Resumed);

    /// <summary>Reads every option and input; opens nothing that writes. <paramref name="network"/> gives the sample shape the specs are read against.</summary>
    private static Job Read(ParseResult parse, AlignOptions o, DiffusionModel located, IDenoiser network)
    {
        int n = GenerateCommand.Positive(parse.GetValue(o.Count), "--count");
        int b = GenerateCommand.Positive(parse.GetValue(o.Batch), "--batch");
        var s = GenerateCommand.CreateSampler(parse.GetValue(o.Sampler), located.Config, GenerateCommand.Positive(parse.GetValue(o.Steps), "--steps"), 0);
        var constraintTexts = parse.GetValue(o.Constraints) ?? [];
        string? preferenceDir = parse.GetValue(o.Preferences), objectiveSpec = parse.GetValue(o.Objective);
        if ((constraintTexts.Length > 0 ? 1 : 0) + (preferenceDir is null ? 0 : 1) + (objectiveSpec is null ? 0 : 1) != 1)
            throw new UsageException("give one of --constraint (one or more), --objective SPEC or --preferences DIR");
        var dualMethod = parse.GetValue(o.Method) switch
        {
            "newton" => DualMethod.Newton,
            "ascent" => DualMethod.ProjectedAscent,
            var m => throw new UsageException($"--method '{m}': expected newton or ascent"),
        };
        long seed = parse.GetValue(o.Seed);
        var mode = o.Tilt.ReadMode(parse);
        if (mode == KlTiltMode.Hybrid) throw new UsageException("--tilt-mode hybrid applies to generate; align samples its tilt exact or fast");
        var exact = o.Tilt.ReadExact(parse);
        var range = o.Tilt.DataRange(parse, located);
        Resources.CheckSamples(n, network.SampleSize, "--count");
        Resources.CheckBatch(b, Math.Max(n, parse.GetValue(o.PerIteration)), network.SampleSize);
        var request = new GenerationRequest { Count = n, BatchSize = b, Seed = seed, OnNonFinite = RuntimeOptions.NanPolicy(parse.GetValue(o.OnNan)) };
        // The dual's iterates draw from seeds offset from the final samples' (seed+i), so the two batches are independent.
        long dualSeed = seed + 5_000_011;
        int PerIteration() => parse.GetValue(o.PerIteration) is var k && k >= 2 ? k : throw new UsageException($"--samples-per-iteration {k}: expected ≥ 2 (an iterate's covariance needs two samples)");
        int Iterations() => GenerateCommand.Positive(parse.GetValue(o.Iterations), "--iterations");
        // One --tilt-mode for the iterates and the final tilt: exact iterates with an exact final tilt, or fast ones.
        var iterateExact = mode == KlTiltMode.Exact ? exact : null;
        var job = new Job(located, s, range, request, mode, [], null, null, null, null, null, null);
        if (constraintTexts.Length > 0)
            return job with
            {
                Constraints = constraintTexts.Select(t => Constraint.Parse(t, network.SampleShape, located.Directory)).ToArray(),
                Constrained = new ConstrainedSettings
                {
                    Method = dualMethod, SamplesPerIteration = PerIteration(), MaxIterations = Iterations(), BatchSize = b, Seed = dualSeed,
                    Exact = iterateExact, FinalMode = mode,
                },
            };
        if (objectiveSpec is not null)
        {
            var features = RewardSpec.Parse(objectiveSpec, network.SampleShape, located.Directory) as FeatureReward
                ?? throw new UsageException($"--objective '{objectiveSpec}': expected a function of features, e.g. sq-dist:T1,T2(LINEAR|LINEAR)");
            var averaging = new DualAveragingSettings
            {
                Beta = parse.GetValue(o.Beta), MaxIterations = Iterations(), SamplesPerIteration = PerIteration(), BatchSize = b, Seed = dualSeed,
                Exact = iterateExact, FinalMode = mode,
            };
            DistributionalAlignment.Check(features, averaging);
            return job with { Features = features, ObjectiveSpec = objectiveSpec, Averaging = averaging };
        }
        var settings = new PreferenceSettings { Beta = parse.GetValue(o.Beta), L2 = parse.GetValue(o.L2), FinalMode = mode, Exact = exact }.Validated();
        return job with { Preferences = PreferenceData.Read(preferenceDir!, network.SampleShape), PreferenceSettings = settings };
    }

    /// <summary>
    /// <c>plan align</c>'s set-up: the dual (constrained, distributional) or the preference fit alone, printing each
    /// iterate (align runs it inside its library entry point, <see cref="Align"/>).
    /// </summary>
    private static Solution Solve(Job job, IDenoiser network)
    {
        var baseLaw = ExactTilt.BaseLaw(network, job.Range);
        if (job.Constrained is { } constrained)
            return Found(job, ProgressReporter.Run("dual", progress => ConstrainedAlignment.Solve(baseLaw, job.Sampler, job.Constraints, constrained,
                Iterates<DualIterate>(progress, constrained.MaxIterations, Describe), job.Request.Cancellation)), trace: null);
        if (job.Averaging is { } averaging)
            return Found(job, ProgressReporter.Run("dual averaging", progress => DistributionalAlignment.Solve(baseLaw, job.Sampler, job.Features!, averaging,
                Iterates<AveragingIterate>(progress, averaging.MaxIterations, Describe), job.Request.Cancellation)), trace: null);
        return Found(job, PreferenceAlignment.Fit(job.Preferences!, network.SampleSize, job.PreferenceSettings!));
    }

    /// <summary>A constrained dual's solution: plotted to <paramref name="trace"/> and its convergence printed when it was solved (not read back).</summary>
    private static Solution Found(Job job, ConstrainedResult dual, string? trace)
    {
        if (!dual.Resumed)
        {
            if (trace is not null) Plot(trace, job.Constraints, dual);
            if (dual.Infeasible is null) Converged(dual.Converged, dual.Trace.Count);
        }
        return new Solution(job.Key, ReportJson.ToNode(dual.Report), dual.Theta, dual.NetworkEvaluations, dual.Infeasible, dual.Resumed);
    }

    /// <summary>A distributional fit: plotted and its convergence printed when it was solved.</summary>
    private static Solution Found(Job job, DistributionalResult dual, string? trace)
    {
        if (!dual.Resumed)
        {
            if (trace is not null) PlotObjective(trace, dual);
            Converged(dual.Converged, dual.Trace.Count);
        }
        return new Solution(job.Key, ReportJson.ToNode(dual.Report(job.ObjectiveSpec!, job.Averaging!.Beta)), dual.Theta, dual.NetworkEvaluations, null, dual.Resumed);
    }

    /// <summary>A preference fit: its accuracies printed when it was fitted.</summary>
    private static Solution Found(Job job, (PreferenceFit Fit, PreferenceReport Report) fitted)
    {
        if (!fitted.Fit.Resumed) DescribeFit(fitted.Fit);
        return new Solution(job.Key, ReportJson.ToNode(fitted.Report), fitted.Fit.Theta, 0, null, fitted.Fit.Resumed);
    }

    /// <summary>
    /// align's one library call (<see cref="ConstrainedAlignment.Run"/>, <see cref="DistributionalAlignment.Run"/> or
    /// <see cref="PreferenceAlignment.Run"/>) with the job's checkpoint: each iterate printed, the solution handed to
    /// <paramref name="found"/> (plotted to <paramref name="trace"/>) before the final tilt, whose finished work the
    /// checkpoint keeps. Returns the final tilt, or null when the constraints cannot be met together.
    /// </summary>
    private static FinalTilt? Align(Job job, IDenoiser network, string trace, BatchCheckpoint? checkpoint, Action<Solution> found)
    {
        string title = job.Mode == KlTiltMode.Exact ? "final tilt (exact)" : "final tilt";
        return ProgressReporter.RunStages(stage =>
        {
            Action<GenerationProgress>? dualBar = null, finalBar = null;
            InlineProgress<T> IteratesOf<T>(string name, int max, Func<T, (int, string)> describe) =>
                Iterates(p => (dualBar ??= stage(name))(p), max, describe);
            var progress = new InlineProgress<GenerationProgress>(p => (finalBar ??= stage(title))(p));
            if (job.Constrained is { } constrained)
                return ConstrainedAlignment.Run(network, job.Range, job.Sampler, job.Constraints, constrained, job.Request,
                    IteratesOf<DualIterate>("dual", constrained.MaxIterations, Describe), progress, checkpoint,
                    new InlineProgress<ConstrainedResult>(dual => found(Found(job, dual, trace)))).Final;
            if (job.Averaging is { } averaging)
                return DistributionalAlignment.Run(network, job.Range, job.Sampler, job.Features!, job.ObjectiveSpec!, averaging, job.Request,
                    IteratesOf<AveragingIterate>("dual averaging", averaging.MaxIterations, Describe), progress, checkpoint,
                    new InlineProgress<DistributionalResult>(dual => found(Found(job, dual, trace)))).Final;
            return PreferenceAlignment.Run(network, job.Range, job.Sampler, job.Preferences!, job.PreferenceSettings!, job.Request, progress, checkpoint,
                new InlineProgress<(PreferenceFit Fit, PreferenceReport Report)>(fitted => found(Found(job, fitted)))).Final;
        });
    }

    /// <summary>
    /// align: the dual (or fit), then its tilt sampled, through the one job runner: a resumed run takes the dual's
    /// solution and the tilt's finished work from the checkpoint, and a NaN/±∞ sample leaves what was finished with a
    /// stopped report.
    /// </summary>
    private static int Run(ParseResult parse, AlignOptions o)
    {
        var located = DiffusionModel.Locate(parse.GetValue(o.Model)!);
        GenerateCommand.RefusePipeline(located, "align");
        string outDir = parse.GetValue(o.Out)!;
        using var network = located.OpenDenoiser(o.Runtime.For(parse));
        var job = Read(parse, o, located, network);
        // Only now, with every input checked, is the output folder created: bad input writes nothing.
        using var output = OutputJob.Open(outDir, new OutputJobSettings { Overwrite = parse.GetValue(o.Overwrite), Resume = parse.GetValue(o.Resume) },
                                          RunPlan.For("align", located, GenerateCommand.PlanSettings(parse)));
        var report = new JobReport
        {
            Command = "align", Model = ReportModel.Of(located, network), Run = new JobRun(output.PlanHash!),
            Blocks = new JsonObject { ["sampler"] = job.Sampler.Name, ["steps"] = job.Sampler.Steps, ["seed"] = job.Request.Seed },
        };
        string trace = Path.Combine(outDir, "dual_trace.png");
        IReadOnlyList<string> Traced(IEnumerable<string> files) => [.. files, .. File.Exists(trace) ? new[] { "dual_trace.png" } : []];
        Solution? solution = null;
        var final = output.Run(() => Align(job, network, trace, output.Checkpoint, found =>
        {
            solution = found;
            // A resumed run's solution is the checkpoint's: printed as such, not solved (nor plotted) again.
            if (found.Resumed) Console.WriteLine($"resuming: the dual's solution from {BatchCheckpoint.PathOf(outDir)} (not solved again)");
            if (found.Infeasible is null && output.Resumed) Console.WriteLine($"resuming: the final tilt's finished work from {BatchCheckpoint.PathOf(outDir)}");
        }), fault =>
        {
            // The dual's solution is finished work too: θ and its block stay beside the samples finished before the fault.
            var kept = fault.Finished;
            var stopped = report with { NetworkEvaluations = (solution?.NetworkEvaluations ?? 0) + kept.NetworkEvaluations };
            if (solution is not null) stopped.Blocks[solution.Key] = solution.Block.DeepClone();
            return new JobOutput(stopped, () => Traced([
                .. kept.Count == 0 ? [] : SampleSetWriter.Write(outDir, kept.Samples, kept.Count, kept.FirstIndex, network.SampleShape, indices: kept.Indices),
                .. solution is null ? [] : WriteTheta(outDir, solution.Theta, network.SampleShape)]));
        });
        report.Blocks[solution!.Key] = solution.Block.DeepClone();
        if (final is null)
        {
            output.Finish(new JobOutput(report with { Status = JobStatus.Infeasible, NetworkEvaluations = solution.NetworkEvaluations }, () => Traced([])));
            Console.Error.WriteLine($"error: the constraints cannot be met together; '{solution.Infeasible}' stays violated while its multiplier diverges (report.json, dual_trace.png in {Path.GetFullPath(outDir)})");
            return 4;
        }
        var samples = final.Result.Samples;
        report.Blocks["final_tilt"] = ReportJson.ToNode(final.Report);
        report.Blocks["statistics"] = RunReport.Statistics(samples.Samples, network.SampleSize);
        if (samples.Skipped.Count > 0) report.Blocks["skipped_non_finite"] = new JsonArray(samples.Skipped.Select(i => (JsonNode)i).ToArray());
        var written = output.Finish(new JobOutput(report with { NetworkEvaluations = samples.NetworkEvaluations + solution.NetworkEvaluations }, () => Traced([
            .. SampleSetWriter.Write(outDir, samples.Samples, samples.Count, 0, network.SampleShape, indices: samples.Indices),
            .. WriteTheta(outDir, solution.Theta, network.SampleShape)])));
        Console.WriteLine($"wrote {samples.Count} aligned samples to {Path.GetFullPath(outDir)} ({string.Join(", ", RunReport.Summary(written["files"]!.AsArray().Select(f => (string)f!).ToList()))})");
        return 0;
    }

    /// <summary>Writes θ as <c>theta.npy</c> (one sample's shape) and returns its name.</summary>
    private static string[] WriteTheta(string folder, float[] theta, IReadOnlyList<int> shape)
    {
        NpyFile.Write(Path.Combine(folder, "theta.npy"), theta, shape);
        return ["theta.npy"];
    }

    /// <summary>
    /// <c>plan align</c>: the dual (or fit) once, as align runs it, then generate's plan of its tilt (PlanCommand, the
    /// one plan path: its checks and refusals apply) with θ in a file beside the plan, hashed in the plan, and the dual's
    /// report block in the plan's set-up, so every shard's report and the merge's carry it (DESIGN §10).
    /// </summary>
    private static int Plan(ParseResult parse, AlignOptions o)
    {
        string path = parse.GetValue(o.Out)!;
        bool overwrite = parse.GetValue(o.Overwrite);
        OutputFile.Check(path, overwrite, "plan.json");
        string thetaPath = ThetaPath(path);
        if (File.Exists(thetaPath) && !overwrite) throw new UsageException($"--out {path}: {thetaPath} exists; pass --overwrite to replace it");
        var located = DiffusionModel.Locate(parse.GetValue(o.Model)!);
        GenerateCommand.RefusePipeline(located, "plan align");
        float[] theta;
        var setup = new JsonObject();
        IReadOnlyList<int> shape;
        using (var network = located.OpenDenoiser(o.Runtime.For(parse)))
        {
            shape = network.SampleShape;
            var job = Read(parse, o, located, network);
            Console.WriteLine("set-up: the dual, once for every shard …");
            var solution = Solve(job, network);
            if (solution.Infeasible is { } which)
            {
                Console.Error.WriteLine($"error: the constraints cannot be met together; '{which}' stays violated while its multiplier diverges; no plan written");
                return 4;
            }
            (theta, setup[job.Key]) = (solution.Theta, solution.Block);
        }
        NpyFile.Write(thetaPath, theta, shape);
        // generate's own command line for the chosen tilt: align's sample options as given, θ from the file, no log Z
        // quadrature (align's final tilt estimates none; the dual's block carries KL).
        var args = new List<string> { parse.GetValue(o.Model)!, "--tilt", Path.GetFullPath(thetaPath), "--logz-samples", "0", "--out", path };
        var own = o.DualOptions.Append(o.Out).Select(option => option.Name).ToHashSet();
        foreach (var result in parse.CommandResult.Children.OfType<System.CommandLine.Parsing.OptionResult>())
        {
            if (result.Implicit || own.Contains(result.Option.Name)) continue;
            if (result.Option.ValueType == typeof(bool)) { if (result.GetValueOrDefault<bool>()) args.Add(result.Option.Name); }
            else foreach (var token in result.Tokens) { args.Add(result.Option.Name); args.Add(token.Value); }
        }
        var (generate, options) = GenerateCommand.Build("plan", "", "", "plan.json");
        var planned = generate.Parse(args);
        if (planned.Errors.Count > 0) throw new UsageException(planned.Errors[0].Message);
        try { return PlanCommand.Run(planned, options, new JsonObject { ["align"] = setup }); }
        catch
        {
            File.Delete(thetaPath);   // no plan, no θ beside it
            throw;
        }
    }

    /// <summary>Where <c>plan align</c> writes θ: beside the plan, <c>PLAN.theta.npy</c>.</summary>
    internal static string ThetaPath(string planPath) => Path.ChangeExtension(planPath, null) + ".theta.npy";

    /// <summary>Each iterate as a progress step and a printed line.</summary>
    private static InlineProgress<T> Iterates<T>(Action<GenerationProgress> progress, int max, Func<T, (int Iteration, string Line)> describe) => new(it =>
    {
        var (k, line) = describe(it);
        progress(new GenerationProgress(k, max, k, max));
        Console.WriteLine(line);
    });

    private static (int, string) Describe(DualIterate it) =>
        (it.Iteration, $"  iterate {it.Iteration}: μ = [{string.Join(", ", it.Mu.Select(v => v.ToString("G4")))}], slacks [{string.Join(", ", it.Slacks.Select(v => v.ToString("G4")))}], KL {it.KlDivergence:G4}");

    private static (int, string) Describe(AveragingIterate it) =>
        (it.Iteration, $"  iterate {it.Iteration}: E[z] = [{string.Join(", ", it.Moments.Select(v => v.ToString("G4")))}], objective {it.Objective:G5}, ‖Δθ‖ {it.ThetaChange:G3}");

    private static void Converged(bool converged, int iterates) =>
        Console.WriteLine(converged ? $"converged after {iterates} iterates" : $"warning: not converged after {iterates} iterates (see report.json)");

    private static void DescribeFit(PreferenceFit fit) =>
        Console.WriteLine($"preference fit: train accuracy {fit.TrainAccuracy:P1} on {fit.TrainCount}, held-out {fit.HeldOutAccuracy:P1} on {fit.HeldOutCount}");

    /// <summary>Two panels: the objective and the change of θ per iterate.</summary>
    private static void PlotObjective(string path, DistributionalResult result)
    {
        var iterationsAxis = result.Trace.Select(t => (double)t.Iteration).ToArray();
        var objectivePlot = new ScottPlot.Plot();
        objectivePlot.Add.Scatter(iterationsAxis, result.Trace.Select(t => t.Objective).ToArray());
        objectivePlot.Title("Φ(E_q z) + β·KL");
        var changePlot = new ScottPlot.Plot();
        changePlot.Add.Scatter(iterationsAxis, result.Trace.Select(t => t.ThetaChange).ToArray());
        changePlot.Title("‖θ_k − θ_{k−1}‖");
        foreach (var p in new[] { objectivePlot, changePlot }) p.XLabel("iterate");
        Panels.Save(path, [objectivePlot, changePlot], 560);
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
}
