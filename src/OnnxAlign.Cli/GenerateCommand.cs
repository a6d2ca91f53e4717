using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using OnnxAlign.Alignment;
using OnnxAlign.Alignment.Prox;
using OnnxAlign.Core;
using OnnxAlign.Estimation;
using OnnxAlign.Guidance;
using OnnxAlign.IO;
using OnnxAlign.Jobs;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary><c>onnxalign generate MODEL</c>: sample the base law (or an aligned law) and write samples, images and a report.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var (command, options) = Build("generate", "Generate samples from a diffusion model, optionally aligned to a reward (KL tilt or Wasserstein prox).",
            "Output folder.", "out");
        command.SetAction(parse => Run(parse, options));
        return command;
    }

    /// <summary>The generate options on a command (<c>generate</c>, or <c>plan</c>, which takes the same command line).</summary>
    internal static (Command Command, GenerateOptions Options) Build(string name, string description, string outDescription, string outDefault)
    {
        var model = new Argument<string>("model") { Description = "A .onnx file with scheduler_config.json beside it, or a model folder (diffusers layout).", Arity = ArgumentArity.ZeroOrOne };
        var count = new Option<int>("--count") { Description = "Number of samples of the whole run.", DefaultValueFactory = _ => 16 };
        var batch = RuntimeOptions.Batch();
        var steps = new Option<int>("--steps") { Description = "Denoising steps (network evaluations per sample).", DefaultValueFactory = _ => 50 };
        var sampler = new Option<string?>("--sampler") { Description = $"One of {string.Join(", ", Sampler.Names)}; default: the config's scheduler class." };
        var eta = new Option<double>("--eta") { Description = "DDIM stochasticity η (0 = deterministic, 1 = DDPM-like).", DefaultValueFactory = _ => 0.0 };
        var seed = new Option<long>("--seed") { Description = "Sample i uses noise stream seed+i.", DefaultValueFactory = _ => 0 };
        var initNoise = new Option<string?>("--init-noise") { Description = "x_T for all samples as .npy [count, ...] (exact reproduction)." };
        var outDir = new Option<string>("--out") { Description = outDescription, DefaultValueFactory = _ => outDefault };
        var shard = new Option<string>("--shard") { Description = "Generate only shard i of n (0-based), e.g. 0/4, or auto (the Slurm array task or Kubernetes Indexed Job index); shards concatenate to the full run (merge).", DefaultValueFactory = _ => "0/1" };
        var shards = new Option<int?>("--shards") { Description = $"With --shard auto: the number of shards where the scheduler does not say it (a Kubernetes Indexed Job's completions; or set {ArrayJob.ShardCountVariable})." };
        var planFile = new Option<string?>("--plan") { Description = "Run the plan written by 'onnxalign plan' (its settings and set-up; MODEL and the sample options come from it): e.g. with --shard auto in an array job." };
        var shape = new Option<string?>("--shape") { Description = "Sample shape when the model leaves it dynamic, e.g. 3x64x64." };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace a previous run in --out." };
        var resume = RuntimeOptions.Resume("finished batches are");
        var onNan = RuntimeOptions.OnNan();
        var align = new Option<string>("--align") { Description = "With --reward: kl (exact linear tilt, or a mixture of tilts for convex low-rank rewards, DESIGN §1–2) or w2 (generate, then the Wasserstein prox stage, DESIGN §3).", DefaultValueFactory = _ => "kl" };

        var tilt = new TiltOptions();
        var prox = new ProxOptions();
        var prompt = new PromptOptions();
        var command = new Command(name, description)
        {
            model, count, batch, steps, sampler, eta, seed, initNoise, outDir, shard, shards, planFile, shape, overwrite, align, onNan, resume,
        };
        var runtime = new RuntimeOptions();
        foreach (var option in prompt.All.Concat(runtime.All).Concat(tilt.All).Concat(prox.All)) command.Options.Add(option);
        var options = new GenerateOptions(model, count, batch, steps, sampler, eta, seed, initNoise, outDir, shard, shards, planFile, shape, overwrite, resume, onNan, align,
                                          tilt, prox, runtime, prompt);
        return (command, options);
    }

    /// <summary>The command's options, for the steps of <see cref="Run"/>.</summary>
    internal sealed record GenerateOptions(Argument<string> Model, Option<int> Count, Option<int> Batch, Option<int> Steps, Option<string?> Sampler,
                                          Option<double> Eta, Option<long> Seed, Option<string?> InitNoise, Option<string> Out, Option<string> Shard,
                                          Option<int?> Shards, Option<string?> Plan, Option<string?> Shape, Option<bool> Overwrite, Option<bool> Resume, Option<string> OnNan, Option<string> Align,
                                          TiltOptions Tilt, ProxOptions Prox, RuntimeOptions Runtime, PromptOptions Prompt);

    /// <summary>Opens the model's networks with the conditioning the options ask for (DESIGN §9).</summary>
    internal static ConditionedModel Open(ParseResult parse, GenerateOptions o, DiffusionModel located) =>
        ConditionedModel.Open(located, o.Prompt.Read(parse), o.Runtime.For(parse, ParseShape(parse.GetValue(o.Shape))));

    /// <summary>Everything the run needs, read and checked before anything is written.</summary>
    internal sealed record Checked(DiffusionModel Model, ConditionedModel Opened, Sampler Sampler, GenerationRequest Request, string Output, TiltOptions.Plan? Plan,
                                  ProxOracle? Oracle, DataRange? Range)
    {
        /// <summary>The law the run samples (the network, conditioned and guided).</summary>
        public IDenoiser Law => Opened.Denoiser;

        /// <summary>The run's identity in report.json (the plan's id, or the hash of the settings): merge joins shards that share it.</summary>
        public string RunId { get; init; } = "";

        /// <summary>The plan file this run follows, or null.</summary>
        public PlanFile? PlanFile { get; init; }

        /// <summary>Where the plan file is (as given).</summary>
        public string? PlanPath { get; init; }
    }

    /// <summary>
    /// Options a shard of a plan takes from its own command line (where it writes, which shard, on what): with --plan
    /// itself, the options that stay out of the plan's settings.
    /// </summary>
    private static readonly string[] ShardOwn = ["--out", "--shard", "--shards", "--device", "--threads", "--resume", "--overwrite"];

    /// <summary>A planned run: the plan's settings become the command line, with this process's output, shard and runtime options.</summary>
    private static int RunPlanned(ParseResult parse, GenerateOptions o, string planPath)
    {
        var plan = ReadPlan(planPath);
        var command = parse.CommandResult.Command;
        var given = parse.CommandResult.Children.OfType<System.CommandLine.Parsing.OptionResult>()
            .Where(r => !r.Implicit && !ShardOwn.Contains(r.Option.Name) && r.Option.Name != "--plan").Select(r => r.Option.Name).ToList();
        if (given.Count > 0 || parse.GetValue(o.Model) is not null)
            throw new UsageException($"{(given.Count > 0 ? string.Join(", ", given) : "MODEL")}: comes from --plan {planPath}; a planned run takes only {string.Join(", ", ShardOwn)}");
        var args = PlannedArguments(plan, planPath, command);
        foreach (string name in ShardOwn)
        {
            var option = command.Options.First(x => x.Name == name);
            if (parse.GetResult(option) is not { Implicit: false } result) continue;
            object? value = result.GetValueOrDefault<object?>();
            if (value is bool flag) { if (flag) args.Add(name); }
            else if (value is not null) { args.Add(name); args.Add(Convert.ToString(value, CultureInfo.InvariantCulture)!); }
        }
        var planned = command.Parse(args);
        if (planned.Errors.Count > 0) throw ConfigException.For("plan", $"{planPath}: its settings do not parse here ({planned.Errors[0].Message})");
        return Execute(planned, o, plan, planPath);
    }

    private static PlanFile ReadPlan(string planPath)
    {
        var plan = PlanFile.Read(planPath);
        if (plan.Command != "generate") throw ConfigException.For("plan", $"{planPath}: a plan of '{plan.Command}', which generate does not run");
        return plan;
    }

    /// <summary>
    /// The single-machine run of an SMC plan whose systems its shards ran (DESIGN §10): the plan's <c>generate</c> into
    /// <paramref name="output"/>, exactly as <c>generate --plan PLAN.json</c> runs it, with every system taken from
    /// <paramref name="systems"/> instead of being run — so the merge of the shards equals that run byte for byte, and
    /// evaluates neither the UNet nor the reward (the systems carry their potentials). The merge's blocks join the report before the job writes it.
    /// </summary>
    /// <param name="planPath">The plan the shards ran.</param>
    /// <param name="output">The merged folder.</param>
    /// <param name="overwrite">Replace a previous run there.</param>
    /// <param name="systems">Every shard's systems.</param>
    /// <param name="addBlocks">Adds the merge's own blocks to the report before it is written.</param>
    internal static void RunMerged(string planPath, string output, bool overwrite, ISmcSystemStore systems, Action<JsonObject> addBlocks)
    {
        var plan = ReadPlan(planPath);
        var (command, o) = Build("generate", "", "", "out");
        var args = PlannedArguments(plan, planPath, command);
        args.AddRange(["--out", output]);
        if (overwrite) args.Add("--overwrite");
        var parse = command.Parse(args);
        if (parse.Errors.Count > 0) throw ConfigException.For("plan", $"{planPath}: its settings do not parse here ({parse.Errors[0].Message})");
        Execute(parse, o, plan, planPath, systems, addBlocks);
    }

    /// <summary>The plan's model and settings as generate's command line (without this process's own options).</summary>
    private static List<string> PlannedArguments(PlanFile plan, string planPath, Command command)
    {
        var args = new List<string> { plan.Model };
        foreach (var (name, value) in plan.Settings.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            var option = command.Options.FirstOrDefault(x => x.Name == "--" + name)
                ?? throw ConfigException.For("plan", $"{planPath}: setting '{name}' is not an option of this version's generate");
            if (value is null) continue;
            if (option.ValueType == typeof(bool)) { if (value == "True") args.Add(option.Name); }
            else { args.Add(option.Name); args.Add(value); }
        }
        return args;
    }

    /// <summary>Reads and checks, then samples (plain, KL-aligned or with the W2 prox stage), writes and reports.</summary>
    private static int Run(ParseResult parse, GenerateOptions o) =>
        parse.GetValue(o.Plan) is { } planPath ? RunPlanned(parse, o, planPath) : Execute(parse, o, null, null);

    /// <param name="parse">The command line (a planned run's: the plan's settings and this process's options).</param>
    /// <param name="o">The options.</param>
    /// <param name="planFile">The plan, or null.</param>
    /// <param name="planPath">Where the plan is.</param>
    /// <param name="systems">A merge's SMC systems (from the shards), taken instead of running them; null otherwise.</param>
    /// <param name="addBlocks">A merge's own blocks, added to the report before it is written; null otherwise.</param>
    private static int Execute(ParseResult parse, GenerateOptions o, PlanFile? planFile, string? planPath, ISmcSystemStore? systems = null,
                               Action<JsonObject>? addBlocks = null)
    {
        var clock = Stopwatch.StartNew();
        var located = Locate(parse, o);
        planFile?.CheckFor(located, planPath!);
        planFile?.CheckInputs(planPath!, located.Directory);
        // The toy models' ground truth is reported beside the statistics: a damaged one is bad input, found now.
        RunReport.CheckReference(located);
        using var opened = Open(parse, o, located);
        var denoiser = opened.Network;
        var run = Check(parse, o, located, opened, planFile, probe: systems is null) with { PlanFile = planFile, PlanPath = planPath };
        run = run with { RunId = planFile?.Id ?? PlanFile.ShortHash(RunPlan.For("generate", located, PlanSettings(parse)).ToCanonicalJson()) };
        if (run.Plan is { Algorithm: KlAlgorithm.HybridTilt } hybrid && planFile?.Setup["data_variance"] is JsonValue planned)
            run = run with { Plan = hybrid with { Settings = hybrid.Settings with { DataVariance = planned.GetValue<double>() } } };
        if (run.Plan is { Algorithm: KlAlgorithm.TiltMixture } mixture && planFile?.Setup["mixture_envelope"] is JsonObject envelope)
            run = run with { Plan = mixture with { Settings = mixture.Settings with { Envelope = MixtureEnvelope.FromJson(envelope.ToJsonString(), $"{planPath}: setup.mixture_envelope") } } };
        // The plan fixed the SMC's systems and its proposal (DESIGN §10); a shard of several runs its block of them.
        if (run.Plan is { IsSmc: true } smc) run = run with { Plan = smc.WithSmcSetup(planFile?.Setup["smc"] as JsonObject, run.Request.Shard) };
        using var rewardNetwork = run.Plan?.Reward;   // a network reward holds a session

        // Only now, with every input checked, is the output folder created (bad input writes nothing), through the one
        // job runner: lock, overwrite, the interrupted-run refusal, and the checkpoint keyed by the run plan.
        string output = run.Output;
        using var job = OutputJob.Open(output, new OutputJobSettings { Overwrite = parse.GetValue(o.Overwrite), Resume = parse.GetValue(o.Resume) },
                                       Fingerprint(parse, located, run.Request.Shard));
        var checkpoint = job.Checkpoint!;
        if (job.Resumed) Console.WriteLine($"resuming: {checkpoint.SavedBatches} finished batches found in {BatchCheckpoint.PathOf(output)}");
        var request = run.Request with { Checkpoint = checkpoint };

        // The library builds the alignment block (DESIGN §6); p is the conditioned (or guided) law when the run has one (DESIGN §9).
        var inputs = run.Plan is { } klPlan
            ? AlignmentReport.Inputs(klPlan, run.Law, run.Range, run.Sampler, request, run.Opened.Law.Source != "none" ? run.Opened.Law.Law : null,
                                     planFile?.Setup["data_variance_source"]?.GetValue<string>())
            : null;
        KlAlignmentReport? alignment = null;
        KlAlignmentResult? aligned = null;
        WassersteinResult? transported = null;
        var result = job.Run(() =>
        {
            if (run.Plan is { } plan)
            {
                (aligned, alignment) = AlignmentReport.Run(plan, inputs!, checkpoint, systems);
                return aligned.Samples;
            }
            if (run.Oracle is not { } oracle) return ProgressReporter.Run("generate", progress => Generation.Run(run.Law, run.Sampler, request, progress));
            // The library's W2 alignment (generation, then the prox stage), its two stages shown apart; the prox's begins with its first report.
            transported = ProgressReporter.RunStages(stage =>
            {
                Action<GenerationProgress>? prox = null;
                return WassersteinAlignment.Run(run.Law, run.Sampler, oracle, request, new InlineProgress<GenerationProgress>(stage("generate")),
                                                proxProgress: new InlineProgress<GenerationProgress>(p => (prox ??= stage("prox"))(p)));
            });
            return transported.Base;
        }, fault => Stopped(run, denoiser, request, fault));
        if (aligned?.Block is { } block)
        {
            job.Finish(Systems(run, denoiser, request, aligned, block, alignment!, clock));
            return 0;
        }
        if (aligned?.Tilt is not null) alignment = KlAlignmentReports.Of(aligned, inputs!);

        var (samples, report) = Samples(run, denoiser, request, result, transported, alignment, clock);
        addBlocks?.Invoke(report.Blocks);
        var written = job.Finish(samples);
        report = report with { Files = written["files"]!.AsArray().Select(f => (string)f!).ToArray() };
        Console.WriteLine($"wrote {result.Count} samples to {Path.GetFullPath(output)} ({string.Join(", ", RunReport.Summary(report.Files))})");

        if (alignment is FastTiltAlignmentReport { TiltMode: "fast" } fast && planFile?.Setup["log_partition"] is JsonObject)
        {
            // The plan estimated log Z and KL once for all shards (with quadrature samples of its own).
            report.Blocks["alignment"] = ReportJson.ToNode(fast.WithLogPartition(TiltLogPartitionReport.ReadFrom(planFile.Setup)));
            job.WriteReport(report);
        }
        else if (alignment is FastTiltAlignmentReport { TiltMode: "fast" } estimated && run.Plan is { LogZSamples: > 0 } fastPlan)
        {
            // After the images are written: the estimate costs more network evaluations than a small run itself.
            Console.WriteLine($"estimating log Z and KL(q‖p) ({fastPlan.LogZNodes} × {fastPlan.LogZSamples} tilted samples; --logz-samples 0 skips this) …");
            var logZ = AlignmentReport.LogPartition(inputs!, result.Samples);
            var withLogZ = estimated.WithLogPartition(logZ);
            report.Blocks["alignment"] = ReportJson.ToNode(withLogZ);
            job.WriteReport(report with { NetworkEvaluations = result.NetworkEvaluations + withLogZ.SideNetworkEvaluations() });
            Console.WriteLine($"KL(q‖p) = {logZ.KlDivergence.Value ?? double.NaN:G4} ± {logZ.KlDivergence.StandardError ?? double.NaN:G2} nats (report.json)");
        }
        return 0;
    }

    /// <summary>Reads every option and checks every input, shape and memory need; writes nothing.</summary>
    /// <param name="parse">The command line.</param>
    /// <param name="o">The options.</param>
    /// <param name="located">The model.</param>
    /// <param name="opened">Its networks.</param>
    /// <param name="planFile">The plan the run follows (its SMC set-up lets the exact methods be sharded), or null.</param>
    /// <param name="probe">Run the network once to check it (a merge, which runs no sampling network, does not).</param>
    internal static Checked Check(ParseResult parse, GenerateOptions o, DiffusionModel located, ConditionedModel opened, PlanFile? planFile = null, bool probe = true)
    {
        var denoiser = opened.Network;
        int n = Positive(parse.GetValue(o.Count), "--count");
        int b = Positive(parse.GetValue(o.Batch), "--batch");
        int s = Positive(parse.GetValue(o.Steps), "--steps");
        double etaValue = parse.GetValue(o.Eta);
        // η = 1 is DDPM's posterior variance; beyond it the DDIM step loses its ε term and is no longer of the family.
        if (!(etaValue is >= 0 and <= 1)) throw new UsageException($"--eta {etaValue}: expected a value in [0, 1]");
        var shardValue = ReadShard(parse, o);
        // A planned SMC run is sharded by its systems, not its samples (checked below, once the plan's set-up is read).
        int? plannedSystems = planFile?.Setup["smc"]?["systems"] is JsonValue m ? (int)m : null;
        if (plannedSystems is null && shardValue.Range(n).Length == 0)
            throw new UsageException($"--shard {shardValue.Index}/{shardValue.Count}: holds no samples of --count {n} (use at most {n} shards)");
        string output = parse.GetValue(o.Out)!;
        if (string.IsNullOrWhiteSpace(output)) throw new UsageException("--out: expected a folder, got an empty path");
        NpyArray? init = parse.GetValue(o.InitNoise) is { } initPath ? NpyFile.Read(initPath) : null;
        var samplerInstance = CreateSampler(parse.GetValue(o.Sampler), located.Config, s, etaValue);
        string alignMode = parse.GetValue(o.Align)!;
        if (alignMode is not ("kl" or "w2")) throw new UsageException($"--align '{alignMode}': expected kl or w2");
        var nanPolicy = RuntimeOptions.NanPolicy(parse.GetValue(o.OnNan));
        if (init is not null)
        {
            if (init.Rows != n || init.RowSize != denoiser.SampleSize)
                throw new ConfigException($"--init-noise: shape [{string.Join(", ", init.Shape)}] does not fit {n} samples of [{string.Join(", ", denoiser.SampleShape)}]");
            if (init.Data.Any(v => !float.IsFinite(v))) throw new ConfigException("--init-noise: contains NaN or infinite values");
        }
        // Everything a run holds in memory is checked before anything is allocated or written.
        Resources.CheckSamples((long)n, denoiser.SampleSize, "--count");
        Resources.CheckBatch(b, n, denoiser.SampleSize);
        TiltOptions.Plan? plan = null;
        ProxOracle? oracle = null;
        if (alignMode == "w2")
        {
            var (spec, lambda) = o.Tilt.RewardAndLambda(parse);
            // A latent model's prox moves the latents; a reward network would see the decoded images (and has no gradient: refused).
            oracle = o.Prox.CreateOracle(parse, spec ?? throw new UsageException("--align w2 needs --reward and --lambda"), lambda, denoiser.SampleShape, located.Directory,
                                         new NetworkRewardOptions(null, o.Runtime.For(parse), opened.Decoder));
        }
        var range = o.Tilt.DataRange(parse, located);
        if (alignMode == "kl") plan = o.Tilt.Read(parse, opened.Denoiser, located.Directory, new NetworkRewardOptions(range, o.Runtime.For(parse), opened.Decoder));
        if (plan is { Algorithm: KlAlgorithm.BlackBox })
        {
            try { BlackBoxAlignment.CheckSampler(plan.Settings.BlackBox.Method, samplerInstance); }
            catch (ConfigException e) { throw new UsageException($"--black-box {BlackBoxAlignment.Name(plan.Settings.BlackBox.Method)}: {Flags.Describe(e)}"); }
        }
        if (plan is { IsExact: true })
            Resources.CheckSamples((long)Math.Ceiling(n * plan.Exact.MaxParticlesPerSample), denoiser.SampleSize, "--count × --max-particles-per-sample");
        if (plan is { Algorithm: KlAlgorithm.TiltMixture } && init is not null)
            throw new UsageException("--init-noise: does not apply to the KL mixture (each sample draws a new x_T for every proposal from its stream)");
        if (plan is { IsExact: true } && init is not null)
            throw new UsageException("--init-noise does not apply to the exact methods (their SMC systems draw their own noise); --tilt-mode fast takes it");
        if (plan is { IsSmc: true } && plannedSystems is { } systems && shardValue.Range(systems).Length == 0)
            throw new UsageException($"--shard {shardValue.Index}/{shardValue.Count}: holds none of the plan's {systems} SMC systems (use at most {systems} shards)");
        if (plan is { IsExact: true } && shardValue != Shard.Whole && (plannedSystems is null || !plan.IsSmc))
            throw new UsageException(plan.IsSmc
                ? "--shard: the exact methods' SMC is sharded by its systems, whose number is a global set-up: make a plan (onnxalign plan … --out PLAN.json), then run generate --plan PLAN.json --shard i/n"
                : "--shard: best-of-N cannot be split into shards yet; run it on one machine");
        if (probe) opened.Probe();   // a network that loads but cannot run (with this conditioning) is bad input too, found before the folder exists
        var request = new GenerationRequest { Count = n, BatchSize = b, Seed = parse.GetValue(o.Seed), Shard = shardValue, InitialNoise = init, OnNonFinite = nanPolicy };
        return new Checked(located, opened, samplerInstance, request, output, plan, oracle, range);
    }

    /// <summary>A run stopped on a NaN/±∞ sample: every finished sample is kept, with the report the job marks stopped.</summary>
    private static JobOutput Stopped(Checked run, OnnxDenoiser denoiser, GenerationRequest request, NonFiniteException fault)
    {
        var kept = fault.Finished;
        var partial = Report(run, denoiser, request, kept);
        // A stopped SMC shard is still a shard of systems: merge names it as stopped, not as a shard of samples.
        if (run.Plan?.Exact is { Block: { } block, Systems: { } systems })
            partial.Blocks["smc_shard"] = new JsonObject { ["systems"] = systems, ["first"] = block.First, ["end"] = block.End };
        return new JobOutput(partial, () => kept.Count == 0 ? [] : WriteSamples(run, kept.Samples, kept.Count, kept.FirstIndex, "samples", kept.Indices));
    }

    /// <summary>The samples (and, after a prox stage, the base samples beside them) and their report.</summary>
    private static (JobOutput Output, JobReport Report) Samples(Checked run, OnnxDenoiser denoiser, GenerationRequest request, GenerationResult result,
                                                                 WassersteinResult? transported, KlAlignmentReport? alignment, Stopwatch clock)
    {
        var report = Report(run, denoiser, request, result);
        var moved = transported?.Aligned;
        if (moved is not null)
        {
            report.Blocks["alignment"] = ReportJson.ToNode(transported!.Report);
            report.Blocks["statistics"] = RunReport.Statistics(moved.Samples, denoiser.SampleSize);
            report.Blocks["base_statistics"] = RunReport.Statistics(result.Samples, denoiser.SampleSize);
            Console.WriteLine(ProxOptions.Describe(moved));
        }
        if (alignment is not null)
        {
            report.Blocks["alignment"] = ReportJson.ToNode(alignment);
            report = report with { NetworkEvaluations = result.NetworkEvaluations + alignment.SideNetworkEvaluations() };
        }
        if (result.Skipped.Count > 0)
        {
            report.Blocks["skipped_non_finite"] = new JsonArray(result.Skipped.Select(i => (JsonNode)i).ToArray());
            Console.Error.WriteLine($"warning: skipped {result.Skipped.Count} samples that turned NaN/±∞ (indices {string.Join(", ", result.Skipped.Take(10))}{(result.Skipped.Count > 10 ? ", …" : "")})");
        }
        var ioClock = new Stopwatch();
        var times = new Dictionary<string, double>();
        report = report with { TimeSeconds = times };
        return (new JobOutput(report, () =>
        {
            ioClock.Start();
            var files = new List<string>();
            if (moved is not null) files.AddRange(WriteSamples(run, result.Samples, result.Count, result.FirstIndex, "base", null));
            files.AddRange(WriteSamples(run, moved?.Samples ?? result.Samples, result.Count, result.FirstIndex, "samples", result.Indices));
            // The times are known once the files are written, before the report that holds them.
            foreach (var (key, value) in RunReport.Times(result, ioClock.Elapsed, clock.Elapsed)) times[key] = value;
            if (moved is not null) times["prox"] = RunReport.Round(moved.Time.TotalSeconds);
            return files;
        }), report);
    }

    /// <summary>
    /// A shard of a planned SMC run (DESIGN §10): its finished systems (<see cref="SmcSystemFiles"/>: particles, weights,
    /// potentials) instead of samples, and its report (run id, shard, block of systems); the merge combines the systems
    /// of all shards, computes the estimates and resamples, as the single run does.
    /// </summary>
    private static JobOutput Systems(Checked run, OnnxDenoiser denoiser, GenerationRequest request, KlAlignmentResult aligned, SmcBlock block,
                                     KlAlignmentReport alignment, Stopwatch clock)
    {
        var report = Report(run, denoiser, request, aligned.Samples);
        report.Blocks["smc_shard"] = new JsonObject
        {
            ["systems"] = block.Systems, ["first"] = block.Block.First, ["end"] = block.Block.End,
            ["particles"] = block.Finished.Sum(s => s.LogWeights.Length),
            ["reason"] = "a shard of an SMC run holds systems, not samples: merge combines every shard's systems and resamples the run's samples",
        };
        report.Blocks["alignment"] = ReportJson.ToNode(alignment);
        var times = new Dictionary<string, double>();
        report = report with { NetworkEvaluations = block.NetworkEvaluations + alignment.SideNetworkEvaluations(), TimeSeconds = times };
        return new JobOutput(report, () =>
        {
            var ioClock = Stopwatch.StartNew();
            var files = SmcSystemFiles.Write(run.Output, block, run.Opened.Network.SampleShape);
            foreach (var (key, value) in RunReport.Times(aligned.Samples, ioClock.Elapsed, clock.Elapsed)) times[key] = value;
            Console.WriteLine($"wrote SMC systems {block.Block} of {block.Systems} ({block.Finished.Sum(s => s.LogWeights.Length)} particles) to {Path.GetFullPath(run.Output)} " +
                              "(systems.npy, systems.json); merge the shards to get the samples");
            return files;
        });
    }

    /// <summary>A generate run's report: the samples' block, the run's identity and plan, and the conditioning.</summary>
    private static JobReport Report(Checked run, OnnxDenoiser denoiser, GenerationRequest request, GenerationResult result)
    {
        var report = RunReport.Create("generate", run.Model, denoiser, run.Sampler, request, result) with
        {
            Run = new JobRun(run.RunId, run.PlanPath is null ? null : Path.GetFullPath(run.PlanPath)),
        };
        // A plan of align's tilt (plan align) carries the dual that chose θ, run once (DESIGN §10): every shard's report,
        // and so the merge's, has its block (constrained, objective or preferences) where align's report has it.
        if (run.PlanFile?.Setup["align"] is JsonObject blocks)
            foreach (var (key, block) in blocks) report.Blocks[key] = block?.DeepClone();
        RunReport.AddConditioning(report, run.Opened);
        return report;
    }

    /// <summary>
    /// Writes a set of samples: as they are for a pixel model; for a latent model (DESIGN §9) the latents as
    /// <c>latents.npy</c> (<c>base_latents.npy</c>) and the decoded images as <c>samples.npy</c> and PNGs.
    /// </summary>
    private static IReadOnlyList<string> WriteSamples(Checked run, float[] samples, int count, int firstIndex, string stem, IReadOnlyList<int>? indices)
    {
        var opened = run.Opened;
        if (opened.Decoder is null) return SampleSetWriter.Write(run.Output, samples, count, firstIndex, opened.Network.SampleShape, stem, indices);
        string latentStem = stem == "samples" ? "latents" : $"{stem}_latents";
        var latents = samples.AsSpan(0, count * opened.Network.SampleSize);
        var written = SampleSetWriter.Write(run.Output, latents, count, firstIndex, opened.Network.SampleShape, latentStem).ToList();
        var images = opened.Decoder.Decode(latents, count);
        written.AddRange(SampleSetWriter.Write(run.Output, images, count, firstIndex, opened.OutputShape, stem, indices));
        return written;
    }

    /// <summary>
    /// The resume fingerprint: the run plan's canonical JSON with this process's shard (an <c>auto</c> shard resolved), so
    /// that the order of the options does not matter and a folder resumes only the shard it holds.
    /// </summary>
    private static RunPlan Fingerprint(ParseResult parse, DiffusionModel model, Shard shard)
    {
        var settings = PlanSettings(parse);
        settings["shard"] = shard.ToString();
        return RunPlan.For("generate", model, settings);
    }

    /// <summary>
    /// Every option's value by name, given or default, except those that do not change the samples (--out, --resume,
    /// --overwrite, --threads, --plan, --shards), the shard and the device: the settings a plan holds and its shards share.
    /// </summary>
    internal static Dictionary<string, string?> PlanSettings(ParseResult parse)
    {
        var settings = new Dictionary<string, string?>();
        foreach (var option in parse.CommandResult.Command.Options)
        {
            if (ShardOwn.Contains(option.Name) || option.Name == "--plan" || option is System.CommandLine.Help.HelpOption) continue;
            object? value;
            try { value = parse.GetResult(option)?.GetValueOrDefault<object?>(); }
            catch (InvalidOperationException) { value = null; }
            settings[option.Name.TrimStart('-')] = value switch
            {
                null => null,
                // A repeatable option (align's --constraint) by its values, in the order given (it matters there).
                string[] list => System.Text.Json.JsonSerializer.Serialize(list),
                double d => d.ToString("R", CultureInfo.InvariantCulture),
                IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
                _ => value.ToString(),
            };
        }
        return settings;
    }

    /// <summary>
    /// Commands that do not take prompts or decode latents yet refuse a Stable-Diffusion-shaped model with what serves
    /// it, rather than sampling it at a conditioning it was not given or treating latents as images.
    /// </summary>
    internal static void RefusePipeline(DiffusionModel located, string command)
    {
        if (located.TextEncoderPath is not null || located.IsLatent)
            throw new UsageException($"MODEL {located.Source}: a Stable-Diffusion-shaped model ({(located.IsLatent ? "latents and a VAE decoder" : "a text encoder")}); " +
                                     $"{command} does not take prompts or decode latents yet: use generate (--prompt, --guidance-scale, --reward, --tilt) and quality --samples");
    }

    /// <summary>The model argument (a planned run has it from the plan).</summary>
    internal static DiffusionModel Locate(ParseResult parse, GenerateOptions o) =>
        DiffusionModel.Locate(parse.GetValue(o.Model) ?? throw new UsageException("MODEL: missing; give a model file or folder (or --plan PLAN.json)"));

    /// <summary>--shard i/n, or auto from the array job's environment (with --shards N where the scheduler does not give the count).</summary>
    internal static Shard ReadShard(ParseResult parse, GenerateOptions o)
    {
        string text = parse.GetValue(o.Shard)!;
        int? count = parse.GetValue(o.Shards);
        if (count is < 1) throw new UsageException($"--shards {count}: expected a positive integer");
        if (text != "auto")
        {
            if (count is not null) throw new UsageException("--shards applies with --shard auto (--shard i/n gives the count itself)");
            return Shard.Parse(text);
        }
        var (shard, source) = ArrayJob.FromEnvironment(Environment.GetEnvironmentVariable, count);
        Console.WriteLine($"shard {shard} (from {source})");
        return shard;
    }

    internal static Sampler CreateSampler(string? name, SchedulerConfig config, int steps, double eta)
    {
        Sampler sampler;
        try { sampler = Sampler.Create(name, config, steps, eta); }
        catch (ArgumentOutOfRangeException e) when (e.ParamName == "steps") { throw new UsageException($"--steps {steps}: expected 1..{config.NumTrainTimesteps}"); }
        catch (ArgumentException e) when (e.ParamName == "name") { throw new UsageException($"--sampler '{name}': expected one of {string.Join(", ", Sampler.Names)}"); }
        // η is DDIM's: another sampler would ignore it, and the run would not be the one asked for.
        if (eta != 0 && sampler is not DdimSampler)
            throw new UsageException($"--eta {eta:G6}: applies to --sampler ddim only (this run's sampler is {sampler.Name})");
        return sampler;
    }

    internal static int Positive(int value, string flag) =>
        value >= 1 ? value : throw new UsageException($"{flag} {value}: expected a positive integer");

    internal static IReadOnlyList<int>? ParseShape(string? text)
    {
        if (text is null) return null;
        var parts = text.Split('x', ',');
        var dims = new List<int>();
        foreach (var p in parts)
        {
            if (!int.TryParse(p, NumberStyles.None, CultureInfo.InvariantCulture, out int d) || d < 1)
                throw new UsageException($"--shape '{text}': expected positive dimensions like 3x64x64");
            dims.Add(d);
        }
        return dims;
    }
}
