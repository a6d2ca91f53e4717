using System.Text.Json.Nodes;
using OnnxAlign.Guidance;
using OnnxAlign.Model;
using OnnxAlign.Output;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>The <c>alignment</c> section of report.json for a KL-aligned (tilted) run.</summary>
internal static class Alignment
{
    public static void Report(JsonObject alignment, TiltOptions.Plan plan, LinearTilt tilt, IDenoiser baseDenoiser, Sampler sampler,
                              GenerationRequest request, GenerationResult result)
    {
        alignment["method"] = "kl-linear-tilt";
        alignment["reward"] = plan.Reward?.Name;
        alignment["lambda"] = plan.Lambda;
        alignment["theta_norm"] = tilt.ThetaNorm;
        alignment["tilt_mode"] = plan.Mode == TiltMode.Exact ? "exact" : "hybrid";
        alignment["max_shift_ratio"] = tilt.MaxShiftRatio;
        if (plan.Mode == TiltMode.Hybrid) alignment["surrogate_steps"] = tilt.SurrogateSteps;
        if (plan.Reward is { } reward)
            alignment["reward_after"] = Summary(reward.EvaluateBatch(result.Samples));

        if (Reference(alignment, plan, plan.Reward, baseDenoiser, sampler, request) is { } reference)
            alignment["theta_projection_before"] = Summary(LogPartition.Projections(reference.Samples, plan.Theta));
        alignment["theta_projection_after"] = Summary(LogPartition.Projections(result.Samples, plan.Theta));
    }

    /// <summary>
    /// Adds log Z(θ) and KL(q‖p) to the alignment section (DESIGN §1). This runs after the samples are written, so that
    /// the images are there at once; it costs --logz-nodes × --logz-samples tilted samples.
    /// </summary>
    public static void AddLogPartition(JsonObject alignment, TiltOptions.Plan plan, IDenoiser baseDenoiser, Sampler sampler,
                                       GenerationRequest request, GenerationResult result)
    {
        // Quadrature nodes use sample indices past the run's own, so they are independent of it.
        var stats = LogPartition.Estimate(baseDenoiser, sampler, plan.Theta, plan.LogZNodes, plan.LogZSamples,
            seed: request.Seed + 1_000_003, batchSize: request.BatchSize, tiltedProjections: LogPartition.Projections(result.Samples, plan.Theta));
        alignment["log_partition"] = new JsonObject { ["value"] = stats.LogPartition.Value, ["standard_error"] = stats.LogPartition.StandardError, ["nodes"] = plan.LogZNodes, ["samples_per_node"] = plan.LogZSamples };
        alignment["kl_divergence"] = new JsonObject { ["value"] = stats.KlDivergence.Value, ["standard_error"] = stats.KlDivergence.StandardError };
        alignment["logz_network_evaluations"] = stats.NetworkEvaluations;
    }

    /// <summary>Samples q ∝ p·exp(f(Ax)/λ) by the mixture of tilts (DESIGN §2) and fills the report's alignment section.</summary>
    public static GenerationResult RunMixture(JsonObject alignment, TiltOptions.Plan plan, FeatureReward reward, IDenoiser denoiser,
                                              Sampler sampler, GenerationRequest request, BatchCheckpoint? checkpoint)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var settings = new TiltMixtureSettings
        {
            BatchSize = request.BatchSize,
            Partition = new LogPartitionSettings { Nodes = plan.LogZNodes, SamplesPerNode = Math.Max(plan.LogZSamples, 32), BatchSize = request.BatchSize },
        };
        var mixture = new TiltMixtureSampler(denoiser, sampler, reward, plan.Lambda!.Value, settings);
        // The set-up (log Z of the terms, pilot rounds) is kept with the finished proposal batches, so --resume repeats neither.
        const string envelopeNote = "mixture.json";
        var envelope = checkpoint?.ReadNote(envelopeNote) is { } saved
            ? MixtureEnvelope.FromJson(saved, Path.Combine(".partial", envelopeNote))
            : null;
        if (envelope is not null) Console.WriteLine($"resuming: the mixture's set-up ({envelope.Components.Count} tilts, ε = {envelope.Epsilon:G4}) read from .partial/{envelopeNote}");
        var drawn = ProgressReporter.Run($"generate (KL mixture, {mixture.Method})", progress =>
        {
            if (envelope is null)
            {
                envelope = mixture.Prepare(request.Seed);
                checkpoint?.WriteNote(envelopeNote, envelope.ToJson());
            }
            return mixture.Sample(request.Count, request.Seed, (accepted, _) =>
                progress(new GenerationProgress(accepted, request.Count, accepted, request.Count)), envelope: envelope, proposals: checkpoint,
                onNonFinite: request.OnNonFinite);
        });
        alignment["method"] = mixture.Method switch
        {
            MixtureMethod.ExactMixture => "kl-exact-mixture",
            MixtureMethod.HubbardStratonovich => "kl-hubbard-stratonovich",
            _ => "kl-tangent-mixture",
        };
        alignment["reward"] = reward.Name;
        alignment["lambda"] = plan.Lambda;
        alignment["features"] = reward.FeatureCount;
        alignment["components"] = new JsonArray(drawn.Components.Select(c => (JsonNode)new JsonObject
        {
            ["u"] = new JsonArray(c.U.Select(v => (JsonNode)v).ToArray()),
            ["intercept"] = c.Intercept,
            ["log_partition"] = c.LogPartition.Value,
            ["log_partition_standard_error"] = c.LogPartition.StandardError,
            ["weight"] = c.Weight,
        }).ToArray());
        alignment["epsilon"] = drawn.Epsilon;
        alignment["proposed"] = drawn.Proposed;
        alignment["acceptance_rate"] = drawn.AcceptanceRate;
        alignment["envelope_violations"] = drawn.EnvelopeViolations;
        if (drawn.NonFiniteProposals.Count > 0)
        {
            alignment["non_finite_proposals"] = new JsonArray(drawn.NonFiniteProposals.Select(i => (JsonNode)i).ToArray());
            Console.Error.WriteLine($"warning: dropped {drawn.NonFiniteProposals.Count} proposals that turned NaN/±∞ (proposal indices " +
                                    $"{string.Join(", ", drawn.NonFiniteProposals.Take(10))}{(drawn.NonFiniteProposals.Count > 10 ? ", …" : "")}; see report.json)");
        }
        alignment["refinement"] = new JsonArray(drawn.Refinement.Select(r => (JsonNode)new JsonObject
            { ["terms"] = r.Terms, ["epsilon"] = r.Epsilon, ["acceptance"] = r.Acceptance }).ToArray());
        alignment["setup_network_evaluations"] = drawn.SetupEvaluations;
        alignment["evaluations_per_accepted_sample"] = drawn.EvaluationsPerAccepted;
        alignment["reward_after"] = Summary(reward.EvaluateBatch(drawn.Samples));
        Reference(alignment, plan, reward, denoiser, sampler, request);
        if (drawn.EnvelopeViolations > 0)
            Console.Error.WriteLine($"warning: {drawn.EnvelopeViolations} of {drawn.Proposed} proposals exceeded the envelope (ε = {drawn.Epsilon:G4}); see report.json");
        Console.WriteLine($"KL mixture ({alignment["method"]}): {drawn.Components.Count} tilts, acceptance {drawn.AcceptanceRate:P1}, " +
                          $"{drawn.EvaluationsPerAccepted:F0} network evaluations per accepted sample");
        return new GenerationResult(drawn.Samples, 0, drawn.Count, drawn.SamplingEvaluations, TimeSpan.Zero, clock.Elapsed);
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
