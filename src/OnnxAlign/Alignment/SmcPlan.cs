using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment;

/// <summary>
/// The global set-up of a planned SMC run (DESIGN §10, a plan's <c>setup.smc</c>): the number of systems M fixed by a
/// pilot of the run's first systems, and the proposal every shard must share (a network reward's fitted tilt, a convex
/// reward's tangent tilt), so that every shard runs its block of the same M systems under the same proposal and never refits.
/// </summary>
/// <param name="Systems">M, the run's number of SMC systems.</param>
/// <param name="ParticlesPerSystem">Particles per system.</param>
/// <param name="TargetEffectiveSampleSize">The ESS M is chosen to reach.</param>
/// <param name="MaxSystems">The budget's largest M.</param>
/// <param name="PilotSystems">The pilot's systems (the run's first ones).</param>
/// <param name="PilotEffectiveSampleSize">The pilot's ESS.</param>
/// <param name="PilotNetworkEvaluations">The pilot's network evaluations.</param>
/// <param name="Rule">How M follows from the pilot, in words.</param>
public sealed record SmcPlan(int Systems, int ParticlesPerSystem, double TargetEffectiveSampleSize, int MaxSystems, int PilotSystems, double PilotEffectiveSampleSize,
                             long PilotNetworkEvaluations, string Rule)
{
    /// <summary>A network reward's fitted tilt, θ included (<see cref="Alignment.TiltFit.ToJson"/>); null for the other methods.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public JsonObject? TiltFit { get; init; }

    /// <summary>A convex low-rank reward's tangent tilt, the proposal of its exact SMC; null for the other methods.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public float[]? ProposalTilt { get; init; }

    /// <summary>The network evaluations of the proposal's own set-up (the fit, the tangent tilt); null where there is none.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] public long? SetupNetworkEvaluations { get; init; }

    /// <summary>
    /// Runs the pilot of the first <see cref="ExactTiltSettings.MinSystems"/> systems (after the proposal's own set-up)
    /// and fixes M from their ESS per system (<see cref="ExactTilt.PlanSystems"/>).
    /// </summary>
    /// <param name="network">The model's denoiser (not disposed here).</param>
    /// <param name="range">The data range x̂0 is projected onto; null for none.</param>
    /// <param name="sampler">The sampler whose law is p.</param>
    /// <param name="reward">The reward with its λ (<see cref="KlAlignment.Run"/>), or null for a raw θ (<see cref="KlAlignment.RunTilt"/>).</param>
    /// <param name="theta">The raw θ where <paramref name="reward"/> is null.</param>
    /// <param name="settings">The run's settings (an SMC method, <see cref="KlAlignment.IsSmc"/>).</param>
    /// <param name="request">The run's request (its count sets the target ESS).</param>
    public static SmcPlan Of(IDenoiser network, DataRange? range, Sampler sampler, (Reward Reward, double Lambda)? reward, float[] theta,
                             KlAlignmentSettings settings, GenerationRequest request)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(request);
        var exact = settings.Exact with { Count = request.Count };
        int pilotSystems = Math.Min(exact.MinSystems, exact.MaxSystems);
        var pilotSettings = settings with { Exact = exact with { Systems = exact.MaxSystems, Block = new SystemBlock(0, pilotSystems) } };
        var pilot = reward is { } r
            ? KlAlignment.Run(network, range, sampler, r.Reward, r.Lambda, pilotSettings, request)
            : KlAlignment.RunTilt(network, range, sampler, theta, pilotSettings, request);
        var block = pilot.Block!;
        int systems = ExactTilt.PlanSystems(block.Finished, network.SampleSize, exact);
        double ess = block.Finished.Any(s => s.LogWeights.Any(double.IsFinite)) ? ExactTilt.Combine(block.Finished, network.SampleSize).EffectiveSampleSize : 0;
        var plan = new SmcPlan(systems, exact.Smc.ParticlesPerSystem, exact.TargetEssPerSample * exact.Count, exact.MaxSystems, pilotSystems, ess, block.NetworkEvaluations,
                               "M = clamp(⌈target ESS / (pilot ESS / pilot systems)⌉, min systems, the budget's max systems); the pilot systems are the run's first ones");
        // The whole fit, θ included (one sample's worth of values): shards move their particles under it and never refit.
        if (pilot.BlackBox?.Fit is { } fit) plan = plan with { TiltFit = fit.ToJson(withTheta: true), SetupNetworkEvaluations = pilot.SetupEvaluations };
        if (pilot.Algorithm == KlAlgorithm.ExactReward) plan = plan with { ProposalTilt = pilot.Theta, SetupNetworkEvaluations = pilot.SetupEvaluations };
        return plan;
    }

    /// <summary>
    /// <paramref name="settings"/> with this set-up applied: M systems, the proposal's fit or tangent tilt, and for a
    /// shard of several its block of the systems.
    /// </summary>
    public KlAlignmentSettings Apply(KlAlignmentSettings settings, Shard shard)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var applied = settings with { Exact = settings.Exact with { Systems = Systems, Block = shard.Count > 1 ? SystemBlock.Of(shard, Systems) : null } };
        if (TiltFit is { } fit) applied = applied with { BlackBox = applied.BlackBox with { Fitted = Alignment.TiltFit.FromJson(fit) } };
        if (ProposalTilt is { } tilt) applied = applied with { ProposalTilt = tilt };
        return applied;
    }
}
