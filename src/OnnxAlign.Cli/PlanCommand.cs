using System.CommandLine;
using System.Text.Json.Nodes;
using OnnxAlign.Alignment;
using OnnxAlign.IO;
using OnnxAlign.Jobs;

namespace OnnxAlign.Cli;

/// <summary>
/// <c>onnxalign plan MODEL … --out PLAN.json</c>: the command line of <c>generate</c>, checked as generate checks it,
/// with every global set-up run once (DESIGN §10) and written into the plan that <c>generate --plan</c> shards read.
/// </summary>
internal static class PlanCommand
{
    public static Command Create()
    {
        var (command, options) = GenerateCommand.Build("plan",
            "Check a generate command line, run its global set-up once and write the plan its shards run (generate --plan PLAN.json --shard i/n or auto, then merge).",
            "The plan file to write.", "plan.json");
        command.SetAction(parse => Run(parse, options));
        // plan align MODEL …: align's command line, its dual run once into the plan (DESIGN §10).
        command.Subcommands.Add(AlignCommand.CreatePlan());
        return command;
    }

    /// <summary>Checks generate's command line, runs its global set-up and writes the plan; <paramref name="setupOf"/> adds set-up a caller ran before (align's dual).</summary>
    internal static int Run(ParseResult parse, GenerateCommand.GenerateOptions o, JsonObject? setupOf = null)
    {
        if (parse.GetValue(o.Plan) is not null) throw new UsageException("--plan: plan writes a plan; generate --plan runs one");
        foreach (var option in new Option[] { o.Shard, o.Shards, o.Resume })
            if (parse.GetResult(option) is { Implicit: false })
                throw new UsageException($"{option.Name}: belongs to each shard's command (generate --plan PLAN.json {option.Name} …); a plan is for all of them");
        string path = parse.GetValue(o.Out)!;
        OutputFile.Check(path, parse.GetValue(o.Overwrite), "plan.json");

        var located = GenerateCommand.Locate(parse, o);
        RunReport.CheckReference(located);
        using var opened = GenerateCommand.Open(parse, o, located);
        var run = GenerateCommand.Check(parse, o, located, opened);
        var denoiser = run.Law;
        using var rewardNetwork = run.Plan?.Reward;
        // What cannot be split is refused here, with why, rather than planned wrongly.
        if (run.Plan is { IsExact: true, IsSmc: false })
            throw new UsageException("--black-box best-of-n: best-of-N cannot be split into shards yet; run it on one machine");
        var setup = new JsonObject();
        if (run.Plan is { Algorithm: KlAlgorithm.HybridTilt, Settings.DataVariance: null } hybrid)
        {
            Console.WriteLine($"set-up: the hybrid surrogate's data variance from {hybrid.Settings.VarianceSamples} base samples …");
            var (variance, evaluations) = KlAlignment.EstimateDataVariance(denoiser, run.Sampler, run.Request, hybrid.Settings.VarianceSamples);
            setup["data_variance"] = variance;
            setup["data_variance_source"] = $"estimated from {hybrid.Settings.VarianceSamples} base samples";
            setup["data_variance_network_evaluations"] = evaluations;
        }
        if (run.Plan is { Algorithm: KlAlgorithm.FastTilt, LogZSamples: > 0 } fast)
        {
            Console.WriteLine($"set-up: log Z and KL(q‖p) ({fast.LogZNodes} × {fast.LogZSamples} tilted samples; --logz-samples 0 skips this) …");
            AlignmentReport.LogPartition(AlignmentReport.Inputs(fast, denoiser, run.Range, run.Sampler, run.Request), tiltedSamples: null).WriteTo(setup);
        }
        if (run.Plan is { Algorithm: KlAlgorithm.TiltMixture, Reward: { } reward, Lambda: { } lambda } mixture)
        {
            Console.WriteLine("set-up: the KL mixture's envelope (its tilts' log Z, the pilot rounds that place them) …");
            var envelope = ProgressReporter.Run("set-up (KL mixture)", _ =>
                KlAlignment.PrepareMixture(denoiser, run.Range, run.Sampler, reward, lambda, mixture.Settings, run.Request));
            setup["mixture_envelope"] = JsonNode.Parse(envelope.ToJson());
        }
        if (run.Plan is { IsSmc: true } smc) setup["smc"] = PlanSmc(smc, denoiser, run);
        var settings = GenerateCommand.PlanSettings(parse);
        // Input files by full path (shards may start elsewhere), and by content: a changed θ or noise file is refused.
        foreach (string name in PlanFile.InputSettings)
            if (settings.GetValueOrDefault(name) is { } input) settings[name] = Path.GetFullPath(input);
        PlanFile.RecordInputs(settings, setup, located.Directory);
        foreach (var (key, value) in setupOf ?? []) setup[key] = value?.DeepClone();
        var plan = PlanFile.Create("generate", located, settings, setup);
        plan.Write(path);
        Console.WriteLine($"wrote plan {plan.Id} to {Path.GetFullPath(path)}: run its shards with generate --plan {path} --shard i/n (or --shard auto in an array job) --out DIR_i, then onnxalign merge --out DIR DIR_0 … DIR_n-1");
        return 0;
    }

    /// <summary>The SMC's global set-up (DESIGN §10, <see cref="SmcPlan.Of"/>): the pilot fixes M; the plan records it and the proposal.</summary>
    private static JsonNode PlanSmc(TiltOptions.Plan plan, OnnxAlign.Model.IDenoiser denoiser, GenerateCommand.Checked run)
    {
        var exact = plan.Exact;
        int pilotSystems = Math.Min(exact.MinSystems, exact.MaxSystems);
        Console.WriteLine($"set-up: the SMC's number of systems from a pilot of its first {pilotSystems} systems ({pilotSystems * exact.Smc.ParticlesPerSystem} particles) …");
        var smc = SmcPlan.Of(denoiser, run.Range, run.Sampler, plan.Reward is { } reward && plan.Lambda is { } lambda ? (reward, lambda) : null, plan.Theta,
                             plan.Settings, run.Request);
        Console.WriteLine($"set-up: {smc.Systems} SMC systems (the pilot's ESS {smc.PilotEffectiveSampleSize:F1} over {smc.PilotSystems} systems; target {smc.TargetEffectiveSampleSize:F0})");
        return ReportJson.ToNode(smc);
    }
}
