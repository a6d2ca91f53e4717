using System.Text.Json.Nodes;
using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Estimation;
using OnnxAlign.Guidance;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>The <c>alignment</c> section of report.json for a KL-aligned (tilted) run.</summary>
internal static class AlignmentReport
{
    /// <summary>
    /// Runs the KL alignment the plan holds (the library picked the algorithm from the reward's structure) and fills the
    /// alignment section of report.json; finished work goes to the checkpoint, so --resume repeats none.
    /// </summary>
    public static KlAlignmentResult Run(JsonObject alignment, TiltOptions.Plan plan, IDenoiser denoiser, DataRange? range, Sampler sampler,
                                        GenerationRequest request, BatchCheckpoint checkpoint, ISmcSystemStore? systems = null)
    {
        string label = plan.Algorithm switch
        {
            KlAlgorithm.ExactTilt => $"generate (exact tilt, {(sampler.IsStochastic ? "twisted SMC" : "noise-space SMC")})",
            KlAlgorithm.TiltMixture => "generate (KL mixture)",
            KlAlgorithm.ExactReward => $"generate (exact, {(sampler.IsStochastic ? "twisted SMC" : "noise-space SMC")} on f(Ax)/λ)",
            KlAlgorithm.HybridTilt => "generate (hybrid tilt)",
            KlAlgorithm.BlackBox => $"generate ({BlackBoxAlignment.Name(plan.Settings.BlackBox.Method)} on a network reward)",
            _ => "generate (fast tilt)",
        };
        var sideRequest = request with { Checkpoint = null };
        if (plan.Algorithm == KlAlgorithm.BlackBox && sampler.IsStochastic && plan.Settings.BlackBox.Method is BlackBoxMethod.TiltSmc or BlackBoxMethod.TiltImportance
            && plan.Settings.BlackBox.Fitted is null && checkpoint.ReadNote(BlackBoxAlignment.FitNote) is null)
            Console.WriteLine($"fitting the proposal tilt: {plan.Settings.BlackBox.Fit.PilotRounds} pilot rounds of {plan.Settings.BlackBox.Fit.PilotSamples} samples " +
                              $"({plan.Settings.BlackBox.Fit.PilotRounds * plan.Settings.BlackBox.Fit.PilotSamples * sampler.Steps} network evaluations) …");
        var run = ProgressReporter.Run(label, progress =>
        {
            var report = new SyncProgress<GenerationProgress>(progress);
            return plan.Reward is { } reward && plan.Lambda is { } lambda
                ? KlAlignment.Run(denoiser, range, sampler, reward, lambda, plan.Settings, sideRequest, report, checkpoint, systems)
                : KlAlignment.RunTilt(denoiser, range, sampler, plan.Theta, plan.Settings, sideRequest, report, checkpoint, systems);
        });
        if (run.Block is { } block)
        {
            // A shard's block: what it ran; the estimates are the merge's, over every shard's systems (DESIGN §10).
            alignment["method"] = plan.Algorithm switch { KlAlgorithm.BlackBox => "kl-black-box", KlAlgorithm.ExactReward => "kl-exact-smc", _ => "kl-linear-tilt" };
            alignment["reward"] = plan.Reward?.Name;
            alignment["lambda"] = plan.Lambda;
            alignment["smc"] = new JsonObject
            {
                ["algorithm"] = block.Method, ["systems"] = block.Systems, ["block"] = new JsonArray(block.Block.First, block.Block.End),
                ["particles_per_system"] = plan.Exact.Smc.ParticlesPerSystem, ["resamplings"] = block.Finished.Sum(s => s.Resamplings),
                ["non_finite_particles"] = block.Finished.Sum(s => s.NonFinite),
            };
            if (run.BlackBox?.Fit is { } blockFit) alignment["tilt_fit"] = blockFit.ToJson(withTheta: false);
            if (run.BlackBox is { } box) alignment["black_box_method"] = BlackBoxAlignment.Name(box.Method);
            alignment["setup_network_evaluations"] = run.SetupEvaluations;
            return run;
        }
        switch (plan.Algorithm)
        {
            case KlAlgorithm.ExactTilt: ReportExact(alignment, plan, run.Exact!, denoiser, range, sampler, request); break;
            case KlAlgorithm.TiltMixture: ReportMixture(alignment, plan, run, denoiser, range, sampler, request); break;
            case KlAlgorithm.BlackBox: ReportBlackBox(alignment, plan, run, denoiser, range, sampler, request); break;
            case KlAlgorithm.ExactReward:
                // The proposal tilt stands where a linear tilt's θ does (norm, projections); the law is p·e^{f(Ax)/λ}.
                ReportExact(alignment, plan with { Theta = run.Theta }, run.Exact!, denoiser, range, sampler, request);
                alignment["method"] = "kl-exact-smc";
                alignment["features"] = plan.LowRank!.FeatureCount;
                alignment["exactness"] = (sampler.IsStochastic
                    ? "twisted SMC with exact path weights, potential f(Ax)/λ, a tangent tilt as proposal (DESIGN §8)"
                    : "tempered SMC on the initial noise with pCN moves, potential f(Ax)/λ") + ": consistent for p·e^{f(Ax)/λ}, p = this sampler's law, as the number of systems grows";
                alignment["proposal_tilt_norm"] = alignment["theta_norm"]?.DeepClone();
                alignment.Remove("theta_norm");
                alignment["setup_network_evaluations"] = run.SetupEvaluations;
                break;
        }
        if (run.Warnings.Count > 0) alignment["warnings"] = new JsonArray(run.Warnings.Select(w => (JsonNode)Flags.Describe(w)).ToArray());
        foreach (var warning in run.Warnings) Console.Error.WriteLine($"warning: {Flags.Describe(warning)} (see report.json)");
        return run;
    }

    /// <summary>The alignment section of a network reward's run (DESIGN §8).</summary>
    private static void ReportBlackBox(JsonObject alignment, TiltOptions.Plan plan, KlAlignmentResult run, IDenoiser denoiser, DataRange? range,
                                       Sampler sampler, GenerationRequest request)
    {
        var box = run.BlackBox!;
        string method = BlackBoxAlignment.Name(box.Method);
        if (run.Exact is { } exact)
        {
            ReportExact(alignment, plan with { Theta = run.Theta }, exact, denoiser, range, sampler, request);
            alignment["proposal_tilt_norm"] = alignment["theta_norm"]?.DeepClone();
            alignment.Remove("theta_norm");
            alignment.Remove("theta_projection_after");
            alignment["smc"]!["proposal_scale"] = box.Fit?.Scale ?? 0;   // the fitted tilt's scale (0: the base law)
            alignment["log_partition"]!["source"] = "log Z_π = log E_p[e^{r/λ}], the run's own Ẑ (product of the SMC stages' mean weights, across systems)";
            alignment["kl_divergence"]!["source"] = "KL(π‖p) = E_π[r/λ] − log Z_π from the run's weights";
            alignment["exactness"] = exact.Method == "noise-space-smc"
                ? "tempered SMC on the initial noise with pCN moves, potential r/λ: consistent for p·e^{r/λ}, p = this deterministic sampler's law, as the number of systems grows"
                : $"{(box.Method is BlackBoxMethod.TiltSmc or BlackBoxMethod.FeynmanKac ? "twisted SMC" : "importance sampling")} with exact path weights, potential r/λ, " +
                  $"{(box.Fit is null ? "the base law" : "a fitted tilt")} as proposal (DESIGN §8): consistent for p·e^{{r/λ}}, p = this sampler's law, as the number of systems grows";
        }
        else
        {
            AddCommon(alignment, plan, range);
            alignment.Remove("theta_norm");
            alignment["exactness"] = $"none: best-of-{plan.Settings.BlackBox.BestOf} keeps the largest reward of N base draws; it does not sample p·e^{{r/λ}} (a baseline)";
            alignment["reward_of_returned_samples"] = Summary(plan.Reward!.EvaluateBatch(run.Samples.Samples));
            Console.WriteLine($"best-of-{plan.Settings.BlackBox.BestOf}: {run.Samples.NetworkEvaluations} network evaluations (not a sampler of π: no ESS, log Z or KL)");
        }
        alignment["method"] = "kl-black-box";
        alignment["black_box_method"] = method;
        if (box.Fit is { } fit) alignment["tilt_fit"] = fit.ToJson(withTheta: false);
        alignment["setup_network_evaluations"] = run.SetupEvaluations;
        long rewardEvaluations = box.RewardEvaluations + (box.Fit?.RewardEvaluations ?? 0);
        alignment["reward_evaluations"] = rewardEvaluations;
        alignment["evaluations_per_returned_sample"] = new JsonObject
        {
            ["network"] = (double)(run.Samples.NetworkEvaluations + run.SetupEvaluations) / request.Count,
            ["reward"] = (double)rewardEvaluations / request.Count,
        };
        if ((plan.Reward as OnnxReward ?? (plan.Reward as DecodedReward)?.Inner as OnnxReward) is { } network)
            alignment["reward_model"] = new JsonObject
            {
                ["on"] = plan.Reward is DecodedReward ? "decoded images (vae_decoder)" : "samples",
                ["card"] = network.Card.Source, ["model"] = network.Card.ModelPath, ["output"] = network.Model.OutputName, ["index"] = network.Index,
                ["class"] = network.IndexName, ["transform"] = network.Card.Transform,
                ["input_shape"] = new JsonArray(network.Model.InputShape.Select(v => (JsonNode)v).ToArray()),
            };
    }

    private static void ReportExact(JsonObject alignment, TiltOptions.Plan plan, ExactTiltResult result, IDenoiser denoiser, DataRange? range,
                                    Sampler sampler, GenerationRequest request)
    {
        var settings = plan.Exact;
        var particles = result.Particles;
        alignment["method"] = "kl-linear-tilt";
        alignment["tilt_mode"] = "exact";
        alignment["exactness"] = sampler.IsStochastic
            ? "twisted SMC with exact path weights (transition-density ratios of the base and tilted steps): consistent for p·e^{⟨θ,x⟩}, p = this sampler's law, as the number of systems grows"
            : "tempered SMC on the initial noise with pCN moves: consistent for p·e^{⟨θ,x⟩}, p = this deterministic sampler's law, as the number of systems grows";
        alignment["smc"] = new JsonObject
        {
            ["algorithm"] = result.Method,
            ["proposal_scale"] = sampler.IsStochastic ? settings.ProposalScale : null,
            ["particles_per_system"] = settings.Smc.ParticlesPerSystem,
            ["systems"] = particles.SystemSizes.Count,
            ["particles"] = particles.Count,
            ["effective_sample_size"] = particles.EffectiveSampleSize,
            ["effective_systems"] = particles.SystemEffectiveSize,
            ["target_effective_sample_size"] = result.TargetEffectiveSampleSize,
            ["reached_target"] = result.ReachedTarget,
            ["resamplings"] = particles.Resamplings,
            ["distinct_returned_samples"] = result.DistinctSamples,
            ["evaluations_per_effective_sample"] = particles.EvaluationsPerEffectiveSample,
            ["non_finite_particles"] = result.Systems.Sum(s => s.NonFinite),
        };
        AddCommon(alignment, plan, range);
        alignment["log_partition"] = Estimate(result.LogPartition, "the run's own Ẑ (product of the SMC stages' mean weights, across systems)");
        alignment["kl_divergence"] = Estimate(result.KlDivergence, "E_π[G(x)] − log Z from the run's weights (G = ⟨θ,x⟩, or f(Ax)/λ for a low-rank reward)");
        if (plan.Reward is { } reward)
        {
            // A reward's own potential G = r/λ was evaluated at every particle by the run: r = λ·G, no second pass of a network.
            var rewards = plan.Algorithm is KlAlgorithm.ExactReward or KlAlgorithm.BlackBox && plan.Lambda is { } lambda
                ? result.Potentials.Select(g => g * lambda).ToArray()
                : reward.EvaluateBatch(particles.Samples);
            var mean = particles.Mean(rewards);
            alignment["reward_after"] = new JsonObject
            {
                ["mean"] = mean.Value, ["standard_error"] = mean.StandardError, ["std"] = particles.StandardDeviation(rewards),
                ["over"] = "the weighted particles",
            };
            alignment["reward_of_returned_samples"] = Summary(result.Picks.Select(i => rewards[i]).ToArray());
        }
        alignment["theta_projection_after"] = new JsonObject { ["mean"] = result.MeanPotential.Value, ["standard_error"] = result.MeanPotential.StandardError };
        if (Reference(alignment, plan, plan.Reward, ExactTilt.BaseLaw(denoiser, range), sampler, request) is { } reference)
            alignment["theta_projection_before"] = Summary(LogPartition.Projections(reference.Samples, plan.Theta));
        Console.WriteLine($"exact tilt ({result.Method}): ESS {particles.EffectiveSampleSize:F0} of {particles.Count} particles, " +
                          $"{particles.EvaluationsPerEffectiveSample:F0} network evaluations per effective sample; " +
                          $"KL(q‖p) = {result.KlDivergence.Value:G4} ± {result.KlDivergence.StandardError:G2} nats");
    }

    /// <summary>The alignment section of a fast or hybrid run, after its samples are written.</summary>
    public static void ReportFast(JsonObject alignment, TiltOptions.Plan plan, KlAlignmentResult run, IDenoiser baseDenoiser, DataRange? range,
                                  Sampler sampler, GenerationRequest request, GenerationResult result)
    {
        var tilt = run.Tilt!;
        bool hybrid = plan.Algorithm == KlAlgorithm.HybridTilt;
        alignment["method"] = "kl-linear-tilt";
        alignment["tilt_mode"] = hybrid ? "hybrid" : "fast";
        alignment["exactness"] = "none guaranteed: the shifted evaluation is exact for the true score only; on a trained network it is biased for strong tilts (DESIGN §1d); see drift";
        AddCommon(alignment, plan, range);
        alignment["max_shift_ratio"] = tilt.MaxShiftRatio;
        if (hybrid && run.DataVariance is { } variance)
        {
            alignment["surrogate_sample_steps"] = tilt.SurrogateSteps;
            alignment["data_variance"] = variance.Value;
            alignment["data_variance_source"] = variance.Estimated ? $"estimated from {plan.Settings.VarianceSamples} base samples" : "data_moments.json";
            if (variance.Estimated) alignment["data_variance_network_evaluations"] = run.SetupEvaluations;
            alignment["trust_radius"] = plan.Settings.TrustRadius;
        }
        var report = run.Drift!;
        alignment["drift"] = DriftJson(report);
        if (plan.Linear is { } reward)
            alignment["reward_after"] = Summary(reward.EvaluateBatch(result.Samples));
        if (Reference(alignment, plan, plan.Linear, ExactTilt.BaseLaw(baseDenoiser, range), sampler, request) is { } reference)
            alignment["theta_projection_before"] = Summary(LogPartition.Projections(reference.Samples, plan.Theta));
        alignment["theta_projection_after"] = Summary(LogPartition.Projections(result.Samples, plan.Theta));
    }

    private static void AddCommon(JsonObject alignment, TiltOptions.Plan plan, DataRange? range)
    {
        alignment["reward"] = plan.Reward?.Name;
        alignment["lambda"] = plan.Lambda;
        alignment["theta_norm"] = System.Numerics.Tensors.TensorPrimitives.Norm(plan.Theta);
        alignment["data_range"] = range is { } r ? new JsonArray(r.Low, r.High) : null;
        alignment["base_law"] = range is null
            ? "the network as it is (no data range known: x̂0 is not projected)"
            : "the network with x̂0 projected onto the data range and ε̂ recomputed (DESIGN §1d); tilts and the base share it";
    }

    /// <summary>The drift diagnostic as report.json holds it.</summary>
    public static JsonObject DriftJson(DriftReport report) => new()
    {
        ["drifting"] = report.IsDrifting,
        ["samples"] = report.Samples,
        ["thresholds"] = new JsonObject { ["z"] = report.Thresholds.Z, ["relative"] = report.Thresholds.Relative, ["minimum_alpha_bar"] = report.Thresholds.MinimumAlphaBar },
        ["timesteps"] = new JsonArray(report.Timesteps.Select(t => (JsonNode)t).ToArray()),
        ["directions"] = new JsonArray(report.Directions.Select(d => (JsonNode)new JsonObject
        {
            ["name"] = d.Name,
            ["drifting"] = d.IsDrifting,
            ["max_abs_z"] = Finite(d.MaxAbsZ),
            ["max_relative_drift"] = Finite(d.MaxRelativeDrift),
            ["worst_step"] = d.WorstStep,
            ["final_mean"] = Finite(d.FinalMean),
            ["final_std"] = Finite(d.FinalStd),
            ["mean_per_step"] = new JsonArray(d.Means.Select(v => (JsonNode?)Finite(v)).ToArray()),
            ["drift_per_step"] = new JsonArray(d.Drifts.Select(v => (JsonNode?)Finite(v)).ToArray()),
            ["standard_error_per_step"] = new JsonArray(d.StandardErrors.Select(v => (JsonNode?)Finite(v)).ToArray()),
        }).ToArray()),
    };

    private static JsonObject Estimate(Estimate e, string source) =>
        new() { ["value"] = Finite(e.Value), ["standard_error"] = Finite(e.StandardError), ["source"] = source };

    /// <summary>A finite number, or null (JSON has no NaN or ∞; the reason is given beside it where it matters).</summary>
    internal static JsonNode? Finite(double v) => double.IsFinite(v) ? JsonValue.Create(v) : null;

    /// <summary>
    /// Adds log Z(θ) and KL(q‖p) to the alignment section (DESIGN §1). This runs after the samples are written, so that
    /// the images are there at once; it costs --logz-nodes × --logz-samples tilted samples.
    /// </summary>
    public static void AddLogPartition(JsonObject alignment, TiltOptions.Plan plan, IDenoiser baseDenoiser, DataRange? range, Sampler sampler,
                                       GenerationRequest request, GenerationResult? result)
    {
        // Quadrature nodes use sample indices past the run's own, so they are independent of it. A plan (no result yet)
        // lets the quadrature draw its own samples at the end node too, so that every shard reports the same estimate.
        var stats = LogPartition.Estimate(ExactTilt.BaseLaw(baseDenoiser, range), sampler, plan.Theta, plan.LogZNodes, plan.LogZSamples,
            seed: request.Seed + 1_000_003, batchSize: request.BatchSize,
            tiltedProjections: result is null ? null : LogPartition.Projections(result.Samples, plan.Theta));
        alignment["log_partition"] = new JsonObject { ["value"] = stats.LogPartition.Value, ["standard_error"] = stats.LogPartition.StandardError, ["nodes"] = plan.LogZNodes, ["samples_per_node"] = plan.LogZSamples };
        alignment["kl_divergence"] = new JsonObject
        {
            ["value"] = Finite(stats.KlDivergence.Value), ["standard_error"] = Finite(stats.KlDivergence.StandardError),
            ["source"] = "path quadrature of fast tilts: it assumes the fast tilt samples q_θ exactly, which the drift diagnostic checks; --tilt-mode exact gives the returned law's own",
        };
        if (stats.KlDivergence.Value < 0)
            Console.Error.WriteLine($"warning: the KL estimate is negative ({stats.KlDivergence.Value:G3}): the fast tilt does not sample the tilt it is meant to (DESIGN §1d); use --tilt-mode exact");
        alignment["logz_network_evaluations"] = stats.NetworkEvaluations;
    }

    /// <summary>The alignment section of a mixture of tilts (DESIGN §2).</summary>
    private static void ReportMixture(JsonObject alignment, TiltOptions.Plan plan, KlAlignmentResult run, IDenoiser denoiser, DataRange? range,
                                      Sampler sampler, GenerationRequest request)
    {
        var drawn = run.Mixture!;
        var reward = plan.LowRank!;
        if (run.ResumedSetup) Console.WriteLine($"resumed: the mixture's set-up ({drawn.Components.Count} tilts, ε = {drawn.Epsilon:G4}) was read from the checkpoint, not recomputed");
        alignment["method"] = drawn.Method switch
        {
            MixtureMethod.ExactMixture => "kl-exact-mixture",
            MixtureMethod.HubbardStratonovich => "kl-hubbard-stratonovich",
            _ => "kl-tangent-mixture",
        };
        alignment["reward"] = reward.Name;
        alignment["lambda"] = plan.Lambda;
        alignment["features"] = reward.FeatureCount;
        alignment["component_tilts"] = "fast (the shifted evaluation of the projected base law): exact for the true score; on a trained network the components carry the fast tilt's bias (DESIGN §1d)";
        alignment["components"] = new JsonArray(drawn.Components.Select(c => (JsonNode)new JsonObject
        {
            ["u"] = new JsonArray(c.U.Select(v => (JsonNode)v).ToArray()),
            ["intercept"] = c.Intercept,
            ["log_partition"] = c.LogPartition.Value,
            ["log_partition_standard_error"] = c.LogPartition.StandardError,
            ["weight"] = c.Weight,
        }).ToArray());
        alignment["epsilon"] = drawn.Epsilon;
        // Counts add up over shards (merge sums them and recomputes the two rates from the sums).
        alignment["proposed"] = drawn.Proposed;
        alignment["acceptance_rate"] = drawn.AcceptanceRate;
        alignment["envelope_violations"] = drawn.EnvelopeViolations;
        alignment["sampling_network_evaluations"] = drawn.SamplingEvaluations;
        alignment["evaluations_per_accepted_sample"] = (double)drawn.SamplingEvaluations / Math.Max(drawn.Count, 1);
        alignment["refinement"] = new JsonArray(drawn.Refinement.Select(r => (JsonNode)new JsonObject
            { ["terms"] = r.Terms, ["epsilon"] = r.Epsilon, ["acceptance"] = r.Acceptance }).ToArray());
        if (plan.Settings.Envelope is null) alignment["setup_network_evaluations"] = drawn.SetupEvaluations;
        else
        {
            // The plan's set-up, made once for every shard: reported by each, counted by none (merge keeps it once).
            alignment["setup"] = "the plan's (computed once for all shards)";
            alignment["plan_setup_network_evaluations"] = drawn.SetupEvaluations;
        }
        alignment["reward_after"] = Summary(reward.EvaluateBatch(drawn.Samples));
        Reference(alignment, plan, reward, ExactTilt.BaseLaw(denoiser, range), sampler, request);
        Console.WriteLine($"KL mixture ({alignment["method"]}): {drawn.Components.Count} tilts, acceptance {drawn.AcceptanceRate:P1}, " +
                          $"{alignment["evaluations_per_accepted_sample"]!.GetValue<double>():F0} network evaluations per accepted sample (set-up {drawn.SetupEvaluations} more)");
    }

    /// <summary>
    /// With --reference-count N: N untilted samples with the run's seeds (sample i, stream i: common random numbers) and
    /// the reward before alignment; null without.
    /// </summary>
    private static GenerationResult? Reference(JsonObject alignment, TiltOptions.Plan plan, Reward? reward, IDenoiser denoiser,
                                               Sampler sampler, GenerationRequest request)
    {
        if (plan.ReferenceCount <= 0) return null;
        var reference = Generation.Run(denoiser, sampler, request.SideRun(plan.ReferenceCount));
        alignment["reference_network_evaluations"] = reference.NetworkEvaluations;
        if (reward is not null) alignment["reward_before"] = Summary(reward.EvaluateBatch(reference.Samples));
        return reference;
    }

    public static long ExtraEvaluations(JsonObject alignment) =>
        new[] { "reference_network_evaluations", "logz_network_evaluations", "data_variance_network_evaluations", "setup_network_evaluations" }
            .Sum(k => alignment[k]?.GetValue<long>() ?? 0);

    private static JsonObject Summary(IReadOnlyList<double> values)
    {
        var (mean, se) = LogPartition.MeanAndStandardError(values);
        double std = se * Math.Sqrt(values.Count);
        return new JsonObject { ["mean"] = mean, ["std"] = std, ["standard_error"] = se, ["count"] = values.Count };
    }
}
