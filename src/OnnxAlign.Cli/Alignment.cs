using System.Text.Json.Nodes;
using OnnxAlign.Guidance;
using OnnxAlign.Model;
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

        if (plan.ReferenceCount > 0)
        {
            // The untilted reference uses the same seeds (sample i, stream i): common random numbers.
            var reference = Generation.Run(baseDenoiser, sampler, request with { Count = plan.ReferenceCount, Shard = Shard.Whole, InitialNoise = null });
            alignment["reference_network_evaluations"] = reference.NetworkEvaluations;
            if (plan.Reward is { } r) alignment["reward_before"] = Summary(r.EvaluateBatch(reference.Samples));
            alignment["theta_projection_before"] = Summary(LogPartition.Projections(reference.Samples, plan.Theta));
        }
        var projections = LogPartition.Projections(result.Samples, plan.Theta);
        alignment["theta_projection_after"] = Summary(projections);

        if (plan.LogZSamples > 0)
        {
            // Quadrature nodes use sample indices past the run's own, so they are independent of it.
            var stats = LogPartition.Estimate(baseDenoiser, sampler, plan.Theta, plan.LogZNodes, plan.LogZSamples,
                seed: request.Seed + 1_000_003, batchSize: request.BatchSize, tiltedProjections: projections);
            alignment["log_partition"] = new JsonObject { ["value"] = stats.LogPartition.Value, ["standard_error"] = stats.LogPartition.StandardError, ["nodes"] = plan.LogZNodes, ["samples_per_node"] = plan.LogZSamples };
            alignment["kl_divergence"] = new JsonObject { ["value"] = stats.KlDivergence.Value, ["standard_error"] = stats.KlDivergence.StandardError };
            alignment["logz_network_evaluations"] = stats.NetworkEvaluations;
        }
    }

    public static long ExtraEvaluations(JsonObject alignment) =>
        new[] { "reference_network_evaluations", "logz_network_evaluations", "data_variance_network_evaluations" }
            .Sum(k => alignment[k]?.GetValue<long>() ?? 0);

    private static JsonObject Summary(IReadOnlyList<double> values)
    {
        var (mean, se) = LogPartition.MeanAndStandardError(values);
        double std = se * Math.Sqrt(values.Count);
        return new JsonObject { ["mean"] = mean, ["std"] = std, ["standard_error"] = se, ["count"] = values.Count };
    }
}
