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
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary><c>onnxalign generate MODEL</c>: sample the base law (or an aligned law) and write samples, images and a report.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "A .onnx file with scheduler_config.json beside it, or a model folder (diffusers layout)." };
        var count = new Option<int>("--count") { Description = "Number of samples of the whole run.", DefaultValueFactory = _ => 16 };
        var batch = RuntimeOptions.Batch();
        var steps = new Option<int>("--steps") { Description = "Denoising steps (network evaluations per sample).", DefaultValueFactory = _ => 50 };
        var sampler = new Option<string?>("--sampler") { Description = $"One of {string.Join(", ", Sampler.Names)}; default: the config's scheduler class." };
        var eta = new Option<double>("--eta") { Description = "DDIM stochasticity η (0 = deterministic, 1 = DDPM-like).", DefaultValueFactory = _ => 0.0 };
        var seed = new Option<long>("--seed") { Description = "Sample i uses noise stream seed+i.", DefaultValueFactory = _ => 0 };
        var initNoise = new Option<string?>("--init-noise") { Description = "x_T for all samples as .npy [count, ...] (exact reproduction)." };
        var outDir = new Option<string>("--out") { Description = "Output folder.", DefaultValueFactory = _ => "out" };
        var shard = new Option<string>("--shard") { Description = "Generate only shard i of n (0-based), e.g. 0/4; shards concatenate to the full run.", DefaultValueFactory = _ => "0/1" };
        var shape = new Option<string?>("--shape") { Description = "Sample shape when the model leaves it dynamic, e.g. 3x64x64." };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace a previous run in --out." };
        var resume = new Option<bool>("--resume") { Description = "Continue an interrupted run in --out (same options); finished batches are kept in OUT/.partial/." };
        var onNan = new Option<string>("--on-nan") { Description = "When a sample turns NaN/±∞: stop (keep the finished samples, exit 3) or skip (drop it, go on).", DefaultValueFactory = _ => "stop" };
        var align = new Option<string>("--align") { Description = "With --reward: kl (exact linear tilt, or a mixture of tilts for convex low-rank rewards, DESIGN §1–2) or w2 (generate, then the Wasserstein prox stage, DESIGN §3).", DefaultValueFactory = _ => "kl" };

        var tilt = new TiltOptions();
        var prox = new ProxOptions();
        var command = new Command("generate", "Generate samples from a diffusion model, optionally aligned to a reward (KL tilt or Wasserstein prox).")
        {
            model, count, batch, steps, sampler, eta, seed, initNoise, outDir, shard, shape, overwrite, align, onNan, resume,
        };
        var runtime = new RuntimeOptions();
        foreach (var option in runtime.All.Concat(tilt.All).Concat(prox.All)) command.Options.Add(option);
        command.SetAction(parse =>
        {
            var clock = Stopwatch.StartNew();
            int n = Positive(parse.GetValue(count), "--count");
            int b = Positive(parse.GetValue(batch), "--batch");
            int s = Positive(parse.GetValue(steps), "--steps");
            double etaValue = parse.GetValue(eta);
            // η = 1 is DDPM's posterior variance; beyond it the DDIM step loses its ε term and is no longer of the family.
            if (!(etaValue is >= 0 and <= 1)) throw new UsageException($"--eta {etaValue}: expected a value in [0, 1]");
            var shardValue = Shard.Parse(parse.GetValue(shard)!);
            if (shardValue.Range(n).Length == 0)
                throw new UsageException($"--shard {shardValue.Index}/{shardValue.Count}: holds no samples of --count {n} (use at most {n} shards)");
            string output = parse.GetValue(outDir)!;
            if (string.IsNullOrWhiteSpace(output)) throw new UsageException("--out: expected a folder, got an empty path");

            var located = DiffusionModel.Locate(parse.GetValue(model)!);
            // The toy models' ground truth is reported beside the statistics: a damaged one is bad input, found now.
            RunReport.CheckReference(located);
            var options = runtime.For(parse, ParseShape(parse.GetValue(shape)));
            NpyArray? init = parse.GetValue(initNoise) is { } initPath ? NpyFile.Read(initPath) : null;
            var samplerInstance = CreateSampler(parse.GetValue(sampler), located.Config, s, etaValue);
            string alignMode = parse.GetValue(align)!;
            if (alignMode is not ("kl" or "w2")) throw new UsageException($"--align '{alignMode}': expected kl or w2");
            var nanPolicy = parse.GetValue(onNan) switch
            {
                "stop" => NonFinitePolicy.Stop,
                "skip" => NonFinitePolicy.Skip,
                var v => throw new UsageException($"--on-nan '{v}': expected stop or skip"),
            };
            using var denoiser = located.OpenDenoiser(options);
            if (init is not null)
            {
                if (init.Rows != n || init.RowSize != denoiser.SampleSize)
                    throw new ConfigException($"--init-noise: shape [{string.Join(", ", init.Shape)}] does not fit {n} samples of [{string.Join(", ", denoiser.SampleShape)}]");
                if (init.Data.Any(v => !float.IsFinite(v))) throw new ConfigException("--init-noise: contains NaN or infinite values");
            }
            // Everything a run holds in memory is checked before anything is allocated or written.
            Resources.CheckSamples((long)n, denoiser.SampleSize, "--count");
            TiltOptions.Plan? plan = null;
            ProxOracle? oracle = null;
            if (alignMode == "w2")
            {
                var (spec, lambda) = tilt.RewardAndLambda(parse);
                oracle = prox.CreateOracle(parse, spec ?? throw new UsageException("--align w2 needs --reward and --lambda"), lambda, denoiser.SampleShape, located.Directory);
            }
            else plan = tilt.Read(parse, denoiser, located.Directory);
            var range = tilt.DataRange(parse, located);
            if (plan is { Algorithm: KlAlgorithm.ExactTilt })
                Resources.CheckSamples((long)Math.Ceiling(n * plan.Exact.MaxParticlesPerSample), denoiser.SampleSize, "--count × --max-particles-per-sample");
            // Only now, with every input checked, is the output folder created: bad input writes nothing.
            if (plan?.Mixture is not null && (shardValue != Shard.Whole || init is not null))
                throw new UsageException("--shard and --init-noise do not apply to the KL mixture (it draws and rejects proposals by index)");
            if (plan is { Algorithm: KlAlgorithm.ExactTilt } && (shardValue != Shard.Whole || init is not null))
                throw new UsageException("--shard and --init-noise do not apply to the exact tilt (its SMC systems draw their own noise); --tilt-mode fast takes them");
            bool resuming = parse.GetValue(resume);
            if (resuming && !BatchCheckpoint.Exists(output))
                throw new ConfigException($"--resume: {output} holds no interrupted run (.partial/run.json)");
            // The folder's lock first: a live run's .partial is not "an interrupted run", and two runs never mix files.
            denoiser.Probe();   // a network that loads but cannot run is bad input too, found before the folder exists
            using var folderLock = SampleSetWriter.PrepareDirectory(output, parse.GetValue(overwrite));
            if (!resuming && !parse.GetValue(overwrite) && BatchCheckpoint.Exists(output))
                throw new ConfigException($"--out {output}: holds an interrupted run; pass --resume to continue it or --overwrite to start over");
            // Everything that determines the samples (the run plan, DESIGN §6): its canonical JSON is the fingerprint.
            string fingerprint = Fingerprint(parse, located);
            var checkpoint = resuming ? BatchCheckpoint.Resume(output, fingerprint) : BatchCheckpoint.Start(output, fingerprint);
            if (resuming) Console.WriteLine($"resuming: {checkpoint.SavedBatches} finished batches found in {BatchCheckpoint.PathOf(output)}");
            var request = new GenerationRequest { Count = n, BatchSize = b, Seed = parse.GetValue(seed), Shard = shardValue, InitialNoise = init, OnNonFinite = nanPolicy, Checkpoint = checkpoint };
            var alignment = new JsonObject();
            GenerationResult result;
            KlAlignmentResult? aligned = null;
            try
            {
                if (plan is not null)
                {
                    aligned = AlignmentReport.Run(alignment, plan, denoiser, range, samplerInstance, request, checkpoint);
                    result = aligned.Samples;
                }
                else
                    result = ProgressReporter.Run("generate", progress => Generation.Run(denoiser, samplerInstance, request, progress));
            }
            catch (NonFiniteException fault)
            {
                // Keep every finished sample, then fail loudly with where it happened.
                var kept = fault.Finished;
                SampleSetWriter.BeginReplacing(output);
                var keptFiles = kept.Count == 0 ? [] : SampleSetWriter.Write(output, kept.Samples, kept.Count, kept.FirstIndex, denoiser.SampleShape, indices: kept.Indices);
                SampleSetWriter.RemoveStale(output, keptFiles);
                var partial = RunReport.Create("generate", located, denoiser, samplerInstance, request, kept);
                partial["status"] = "stopped";
                partial["error"] = new JsonObject { ["kind"] = "non-finite", ["step"] = fault.Step, ["sample"] = fault.SampleIndex };
                partial["files"] = new JsonArray(keptFiles.Select(f => (JsonNode)f).ToArray());
                RunReport.Write(output, partial);
                Console.Error.WriteLine($"error: {fault.Message}; {kept.Count} finished samples were kept in {Path.GetFullPath(output)} " +
                                        (nanPolicy == NonFinitePolicy.Skip ? "(under --on-nan skip: every particle of an SMC system turned NaN/±∞, nothing was left to weigh)"
                                                                           : "(--on-nan skip drops such samples and goes on)"));
                return 3;
            }
            if (aligned?.Tilt is not null) AlignmentReport.ReportFast(alignment, plan!, aligned, denoiser, range, samplerInstance, request, result);

            ProxBatch? moved = oracle is null ? null : ProgressReporter.Run("prox", progress => ProxStage.Apply(oracle, result.Samples, progress));

            var ioClock = Stopwatch.StartNew();
            var files = new List<string>();
            SampleSetWriter.BeginReplacing(output);
            if (moved is not null) files.AddRange(SampleSetWriter.Write(output, result.Samples, result.Count, result.FirstIndex, denoiser.SampleShape, stem: "base"));
            files.AddRange(SampleSetWriter.Write(output, moved?.Samples ?? result.Samples, result.Count, result.FirstIndex, denoiser.SampleShape, indices: result.Indices));
            SampleSetWriter.RemoveStale(output, files);
            var report = RunReport.Create("generate", located, denoiser, samplerInstance, request, result);
            if (moved is not null)
            {
                report["alignment"] = ProxOptions.Report(oracle!, moved, result.FirstIndex);
                report["statistics"] = RunReport.Statistics(moved.Samples, denoiser.SampleSize);
                report["base_statistics"] = RunReport.Statistics(result.Samples, denoiser.SampleSize);
                Console.WriteLine(ProxOptions.Describe(moved));
            }
            if (plan is not null)
            {
                report["alignment"] = alignment;
                report["network_evaluations"] = result.NetworkEvaluations + AlignmentReport.ExtraEvaluations(alignment);
            }
            if (result.Skipped.Count > 0)
            {
                report["skipped_non_finite"] = new JsonArray(result.Skipped.Select(i => (JsonNode)i).ToArray());
                Console.Error.WriteLine($"warning: skipped {result.Skipped.Count} samples that turned NaN/±∞ (indices {string.Join(", ", result.Skipped.Take(10))}{(result.Skipped.Count > 10 ? ", …" : "")})");
            }
            report["files"] = new JsonArray(files.Select(f => (JsonNode)f).ToArray());
            RunReport.AddTimes(report, result, ioClock.Elapsed, clock.Elapsed);
            if (moved is not null) report["time_seconds"]!["prox"] = Math.Round(moved.Time.TotalSeconds, 6);
            RunReport.Write(output, report);

            checkpoint.Complete();
            Console.WriteLine($"wrote {result.Count} samples to {Path.GetFullPath(output)} ({string.Join(", ", RunReport.Summary(files))})");
            if (plan is { Algorithm: KlAlgorithm.HybridTilt })
                alignment["kl_divergence"] = new JsonObject { ["value"] = null, ["reason"] = "the hybrid tilt's law has no known log Z: the path quadrature would give the exact tilt's, not this law's" };
            if (plan is { Algorithm: KlAlgorithm.FastTilt, LogZSamples: > 0 })
            {
                // After the images are written: the estimate costs more network evaluations than a small run itself.
                Console.WriteLine($"estimating log Z and KL(q‖p) ({plan.LogZNodes} × {plan.LogZSamples} tilted samples; --logz-samples 0 skips this) …");
                AlignmentReport.AddLogPartition(alignment, plan, denoiser, range, samplerInstance, request, result);
                report["network_evaluations"] = result.NetworkEvaluations + AlignmentReport.ExtraEvaluations(alignment);
                RunReport.Write(output, report);
                var kl = alignment["kl_divergence"]!;
                Console.WriteLine($"KL(q‖p) = {kl["value"]!.GetValue<double>():G4} ± {kl["standard_error"]!.GetValue<double>():G2} nats (report.json)");
            }
            return 0;
        });
        return command;
    }

    /// <summary>
    /// The run plan's canonical JSON: every option's value by name, given or default, except those that do not change
    /// the samples (--out, --resume, --overwrite, --threads), so the order of the options does not matter.
    /// </summary>
    private static string Fingerprint(ParseResult parse, DiffusionModel model)
    {
        var settings = new Dictionary<string, string?>();
        foreach (var option in parse.CommandResult.Command.Options)
        {
            if (option.Name is "--out" or "--resume" or "--overwrite" or "--threads" || option is System.CommandLine.Help.HelpOption) continue;
            object? value;
            try { value = parse.GetResult(option)?.GetValueOrDefault<object?>(); }
            catch (InvalidOperationException) { value = null; }
            settings[option.Name.TrimStart('-')] = value switch
            {
                null => null,
                double d => d.ToString("R", CultureInfo.InvariantCulture),
                IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
                _ => value.ToString(),
            };
        }
        return Jobs.RunPlan.For("generate", model, settings).ToCanonicalJson();
    }

    internal static Sampler CreateSampler(string? name, SchedulerConfig config, int steps, double eta)
    {
        try { return Sampler.Create(name, config, steps, eta); }
        catch (ArgumentOutOfRangeException e) when (e.ParamName == "steps") { throw new UsageException($"--steps {steps}: expected 1..{config.NumTrainTimesteps}"); }
        catch (ArgumentException e) when (e.ParamName == "name") { throw new UsageException($"--sampler '{name}': expected one of {string.Join(", ", Sampler.Names)}"); }
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
