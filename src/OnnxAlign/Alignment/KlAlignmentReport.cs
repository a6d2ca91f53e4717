using System.Numerics.Tensors;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using OnnxAlign.Core;
using OnnxAlign.Estimation;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;
using static System.Text.Json.Serialization.JsonIgnoreCondition;

namespace OnnxAlign.Alignment;

/// <summary>
/// report.json's <c>alignment</c> block of a KL-aligned run (DESIGN §1, §2, §8, §10), one record per algorithm's block
/// (<see cref="FastTiltAlignmentReport"/>, <see cref="ExactAlignmentReport"/>, <see cref="BestOfAlignmentReport"/>,
/// <see cref="MixtureAlignmentReport"/>, <see cref="SmcShardAlignmentReport"/>), built by <see cref="KlAlignmentReports"/>
/// and serialised by <see cref="IO.ReportJson"/> with the fields of its run-time type, in declaration order (merge
/// compares and pools blocks key by key). A field that a run does not have is left out; one that it has but is not
/// finite is written as null.
/// </summary>
public abstract record KlAlignmentReport
{
    /// <summary>
    /// Network evaluations the block's side runs and set-up cost beyond the samples' own (the reference run, the log Z
    /// quadrature, the data variance, the set-up), which the run's total counts; a plan's set-up, made once for all
    /// shards, is not counted.
    /// </summary>
    public abstract long SideNetworkEvaluations();
}

/// <summary>{mean, std, standard_error, count} of per-sample values (merge pools blocks of this shape).</summary>
/// <param name="Mean">The mean.</param>
/// <param name="Std">The standard deviation (n − 1).</param>
/// <param name="StandardError">The mean's standard error.</param>
/// <param name="Count">The values.</param>
public sealed record ValueSummary(double Mean, double Std, double StandardError, int Count)
{
    /// <summary>The summary of <paramref name="values"/>.</summary>
    public static ValueSummary Of(IReadOnlyList<double> values)
    {
        var (mean, se) = LogPartition.MeanAndStandardError(values);
        return new ValueSummary(mean, se * Math.Sqrt(values.Count), se, values.Count);
    }
}

/// <summary>A mean over weighted particles.</summary>
/// <param name="Mean">The weighted mean.</param>
/// <param name="StandardError">Its standard error.</param>
/// <param name="Std">The weighted standard deviation.</param>
/// <param name="Over">What was averaged.</param>
public sealed record WeightedSummary(double Mean, double StandardError, double Std, string Over);

/// <summary>A mean and its standard error.</summary>
/// <param name="Mean">The mean.</param>
/// <param name="StandardError">Its standard error.</param>
public sealed record MeanEstimate(double Mean, double StandardError);

/// <summary>An estimate (null where not finite) and where it comes from.</summary>
/// <param name="Value">The value, or null.</param>
/// <param name="StandardError">Its standard error, or null.</param>
/// <param name="Source">How it was estimated.</param>
public sealed record EstimateReport(double? Value, double? StandardError, string Source)
{
    /// <summary><paramref name="e"/> with non-finite figures as null.</summary>
    public static EstimateReport Of(Estimate e, string source) => new(FiniteOrNull(e.Value), FiniteOrNull(e.StandardError), source);

    internal static double? FiniteOrNull(double v) => double.IsFinite(v) ? v : null;
}

/// <summary>An estimate that a law does not have, and why.</summary>
/// <param name="Value">Always null.</param>
/// <param name="Reason">Why there is none.</param>
public sealed record NoEstimate(double? Value, string Reason);

/// <summary>log Z(θ) by path quadrature of fast tilts (DESIGN §1).</summary>
/// <param name="Value">log Z, or null where not finite.</param>
/// <param name="StandardError">Its standard error.</param>
/// <param name="Nodes">Gauss–Legendre nodes.</param>
/// <param name="SamplesPerNode">Tilted samples per node.</param>
public sealed record QuadratureEstimate(double? Value, double? StandardError, int Nodes, int SamplesPerNode);

/// <summary>The fast tilt's log Z and KL(q‖p) (<see cref="KlAlignmentReports.EstimateLogPartition"/>) and what they cost.</summary>
/// <param name="LogPartition">log Z(θ).</param>
/// <param name="KlDivergence">KL(q‖p).</param>
/// <param name="NetworkEvaluations">Network evaluations of the quadrature's samples.</param>
public sealed record TiltLogPartitionReport(QuadratureEstimate LogPartition, EstimateReport KlDivergence, long NetworkEvaluations)
{
    /// <summary>
    /// Writes the estimate into <paramref name="block"/> under the keys the alignment block has for it (<c>log_partition</c>,
    /// <c>kl_divergence</c>, <c>logz_network_evaluations</c>): a plan's set-up holds it so, estimated once for all shards.
    /// </summary>
    public void WriteTo(JsonObject block)
    {
        ArgumentNullException.ThrowIfNull(block);
        block["log_partition"] = IO.ReportJson.ToNode(LogPartition);
        block["kl_divergence"] = IO.ReportJson.ToNode(KlDivergence);
        block["logz_network_evaluations"] = NetworkEvaluations;
    }

    /// <summary>The estimate <see cref="WriteTo"/> wrote into <paramref name="block"/>.</summary>
    /// <exception cref="System.Text.Json.JsonException">The block does not hold one.</exception>
    public static TiltLogPartitionReport ReadFrom(JsonObject block)
    {
        ArgumentNullException.ThrowIfNull(block);
        static JsonNode Entry(JsonObject b, string key) => b[key] ?? throw new System.Text.Json.JsonException($"no '{key}' where a log Z estimate was expected");
        return new TiltLogPartitionReport(IO.ReportJson.FromNode<QuadratureEstimate>(Entry(block, "log_partition")),
                                          IO.ReportJson.FromNode<EstimateReport>(Entry(block, "kl_divergence")),
                                          Entry(block, "logz_network_evaluations").GetValue<long>());
    }
}

/// <summary>The drift diagnostic (DESIGN §1d) as report.json holds it.</summary>
/// <param name="Drifting">Whether some direction drifts.</param>
/// <param name="Samples">Samples observed.</param>
/// <param name="Thresholds">The thresholds applied.</param>
/// <param name="Timesteps">The visited timesteps.</param>
/// <param name="Directions">Each watched direction.</param>
public sealed record DriftBlock(bool Drifting, int Samples, DriftThresholds Thresholds, IReadOnlyList<int> Timesteps, IReadOnlyList<DriftDirectionBlock> Directions)
{
    /// <summary>The block of <paramref name="report"/>.</summary>
    public static DriftBlock Of(DriftReport report) => new(report.IsDrifting, report.Samples, report.Thresholds, report.Timesteps,
        report.Directions.Select(d => new DriftDirectionBlock(d.Name, d.IsDrifting, d.MaxAbsZ, d.MaxRelativeDrift, d.WorstStep, d.FinalMean, d.FinalStd,
                                                              d.Means, d.Drifts, d.StandardErrors)).ToArray());
}

/// <summary>One direction of <see cref="DriftBlock"/> (see <see cref="DirectionDrift"/>).</summary>
/// <param name="Name">The direction.</param>
/// <param name="Drifting">Whether it drifts.</param>
/// <param name="MaxAbsZ">max |z|.</param>
/// <param name="MaxRelativeDrift">max relative drift.</param>
/// <param name="WorstStep">The worst step.</param>
/// <param name="FinalMean">The final projection's mean.</param>
/// <param name="FinalStd">Its standard deviation.</param>
/// <param name="MeanPerStep">The projection's mean per step.</param>
/// <param name="DriftPerStep">Its drift per step.</param>
/// <param name="StandardErrorPerStep">The drift's standard error per step.</param>
public sealed record DriftDirectionBlock(string Name, bool Drifting, double MaxAbsZ, double MaxRelativeDrift, int WorstStep, double FinalMean, double FinalStd,
                                         double[] MeanPerStep, double[] DriftPerStep, double[] StandardErrorPerStep);

/// <summary>The exact methods' SMC: what ran and how well it did.</summary>
/// <param name="Algorithm">Twisted or noise-space SMC.</param>
/// <param name="ProposalScale">The proposal's scale (null for a deterministic sampler).</param>
/// <param name="ParticlesPerSystem">Particles per system.</param>
/// <param name="Systems">Systems.</param>
/// <param name="Particles">Particles.</param>
/// <param name="EffectiveSampleSize">ESS of the weighted particles.</param>
/// <param name="EffectiveSystems">ESS across systems.</param>
/// <param name="TargetEffectiveSampleSize">The ESS asked for.</param>
/// <param name="ReachedTarget">Whether it was reached.</param>
/// <param name="Resamplings">Resamplings.</param>
/// <param name="DistinctReturnedSamples">Distinct samples among those returned.</param>
/// <param name="EvaluationsPerEffectiveSample">Network evaluations per effective sample.</param>
/// <param name="NonFiniteParticles">Particles that turned NaN/±∞ (weight 0).</param>
public sealed record SmcReport(string Algorithm, double? ProposalScale, int ParticlesPerSystem, int Systems, int Particles, double EffectiveSampleSize,
                               double EffectiveSystems, double TargetEffectiveSampleSize, bool ReachedTarget, int Resamplings, int DistinctReturnedSamples,
                               double EvaluationsPerEffectiveSample, int NonFiniteParticles);

/// <summary>A shard's block of SMC systems (DESIGN §10).</summary>
/// <param name="Algorithm">Twisted or noise-space SMC.</param>
/// <param name="Systems">The run's systems.</param>
/// <param name="Block">[first, end) of this shard's.</param>
/// <param name="ParticlesPerSystem">Particles per system.</param>
/// <param name="Resamplings">Resamplings of the block.</param>
/// <param name="NonFiniteParticles">Its particles that turned NaN/±∞.</param>
public sealed record SmcBlockReport(string Algorithm, int Systems, int[] Block, int ParticlesPerSystem, int Resamplings, int NonFiniteParticles);

/// <summary>Evaluations per returned sample.</summary>
/// <param name="Network">Network evaluations (sampling and set-up).</param>
/// <param name="Reward">Reward evaluations.</param>
public sealed record EvaluationsPerSample(double Network, double Reward);

/// <summary>The network reward a black-box run aligned to.</summary>
/// <param name="On">What it sees (samples or decoded images).</param>
/// <param name="Card">The reward card.</param>
/// <param name="Model">The ONNX model.</param>
/// <param name="Output">Its output.</param>
/// <param name="Index">The output's index.</param>
/// <param name="Class">The index's name.</param>
/// <param name="Transform">The transform applied.</param>
/// <param name="InputShape">The model's input shape.</param>
public sealed record RewardModelReport(string On, string Card, string Model, string Output, int Index, string Class, string Transform, IReadOnlyList<int> InputShape);

/// <summary>A tilt of the KL mixture (DESIGN §2).</summary>
/// <param name="U">Its point u.</param>
/// <param name="Intercept">f's tangent intercept.</param>
/// <param name="LogPartition">Its log Z.</param>
/// <param name="LogPartitionStandardError">log Z's standard error.</param>
/// <param name="Weight">Its weight.</param>
public sealed record MixtureComponentReport(double[] U, double Intercept, double LogPartition, double LogPartitionStandardError, double Weight);

/// <summary>The fast or hybrid tilt's block (DESIGN §1d).</summary>
public sealed record FastTiltAlignmentReport : KlAlignmentReport
{
    /// <summary>The run's warnings.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public IReadOnlyList<string>? Warnings { get; init; }
    /// <summary>Always <c>kl-linear-tilt</c>.</summary>
    public string Method { get; init; } = "kl-linear-tilt";
    /// <summary><c>fast</c> or <c>hybrid</c>.</summary>
    public required string TiltMode { get; init; }
    /// <summary>What the law is exact for.</summary>
    public required string Exactness { get; init; }
    /// <summary>The reward's name, or null for a raw θ.</summary>
    public string? Reward { get; init; }
    /// <summary>λ, or null for a raw θ.</summary>
    public double? Lambda { get; init; }
    /// <summary>‖θ‖.</summary>
    public float ThetaNorm { get; init; }
    /// <summary>The data range, or null.</summary>
    public float[]? DataRange { get; init; }
    /// <summary>What p is.</summary>
    public required string BaseLaw { get; init; }
    /// <summary>The largest shift ratio of the shifted evaluation.</summary>
    public double MaxShiftRatio { get; init; }
    /// <summary>The hybrid's surrogate steps.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public long? SurrogateSampleSteps { get; init; }
    /// <summary>The hybrid's data variance.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public double? DataVariance { get; init; }
    /// <summary>Where it came from.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public string? DataVarianceSource { get; init; }
    /// <summary>What estimating it cost.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public long? DataVarianceNetworkEvaluations { get; init; }
    /// <summary>The hybrid's trust radius.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public double? TrustRadius { get; init; }
    /// <summary>The drift diagnostic.</summary>
    public required DriftBlock Drift { get; init; }
    /// <summary>The reward of the samples (a linear reward's).</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public ValueSummary? RewardAfter { get; init; }
    /// <summary>The reference run's network evaluations.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public long? ReferenceNetworkEvaluations { get; init; }
    /// <summary>The reward of the reference samples.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public ValueSummary? RewardBefore { get; init; }
    /// <summary>⟨θ, x⟩ of the reference samples.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public ValueSummary? ThetaProjectionBefore { get; init; }
    /// <summary>⟨θ, x⟩ of the samples.</summary>
    public required ValueSummary ThetaProjectionAfter { get; init; }
    /// <summary>log Z(θ) (<see cref="WithLogPartition"/>).</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public QuadratureEstimate? LogPartition { get; init; }
    /// <summary>KL(q‖p): an <see cref="EstimateReport"/>, or a <see cref="NoEstimate"/> for the hybrid's law.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public object? KlDivergence { get; init; }
    /// <summary>The quadrature's network evaluations.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public long? LogzNetworkEvaluations { get; init; }

    /// <summary>This block with the fast tilt's log Z and KL.</summary>
    public FastTiltAlignmentReport WithLogPartition(TiltLogPartitionReport estimate) =>
        this with { LogPartition = estimate.LogPartition, KlDivergence = estimate.KlDivergence, LogzNetworkEvaluations = estimate.NetworkEvaluations };

    /// <inheritdoc/>
    public override long SideNetworkEvaluations() => (ReferenceNetworkEvaluations ?? 0) + (LogzNetworkEvaluations ?? 0) + (DataVarianceNetworkEvaluations ?? 0);
}

/// <summary>An exact method's block: the exact tilt, SMC on f(Ax)/λ, or a network reward's SMC or importance sampling (DESIGN §8).</summary>
public sealed record ExactAlignmentReport : KlAlignmentReport
{
    /// <summary><c>kl-linear-tilt</c>, <c>kl-exact-smc</c> or <c>kl-black-box</c>.</summary>
    public required string Method { get; init; }
    /// <summary>Always <c>exact</c>.</summary>
    public string TiltMode { get; init; } = "exact";
    /// <summary>What the law is exact for.</summary>
    public required string Exactness { get; init; }
    /// <summary>The SMC.</summary>
    public required SmcReport Smc { get; init; }
    /// <summary>The reward's name, or null for a raw θ.</summary>
    public string? Reward { get; init; }
    /// <summary>λ, or null for a raw θ.</summary>
    public double? Lambda { get; init; }
    /// <summary>‖θ‖ of a linear tilt.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public float? ThetaNorm { get; init; }
    /// <summary>The data range, or null.</summary>
    public float[]? DataRange { get; init; }
    /// <summary>What p is.</summary>
    public required string BaseLaw { get; init; }
    /// <summary>log Z from the run's weights.</summary>
    public required EstimateReport LogPartition { get; init; }
    /// <summary>KL(π‖p) from the run's weights.</summary>
    public required EstimateReport KlDivergence { get; init; }
    /// <summary>The reward over the weighted particles.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public WeightedSummary? RewardAfter { get; init; }
    /// <summary>The reward of the returned samples.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public ValueSummary? RewardOfReturnedSamples { get; init; }
    /// <summary>E_π of the potential.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public MeanEstimate? ThetaProjectionAfter { get; init; }
    /// <summary>The reference run's network evaluations.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public long? ReferenceNetworkEvaluations { get; init; }
    /// <summary>The reward of the reference samples.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public ValueSummary? RewardBefore { get; init; }
    /// <summary>⟨θ, x⟩ of the reference samples.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public ValueSummary? ThetaProjectionBefore { get; init; }
    /// <summary>The low-rank reward's features.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public int? Features { get; init; }
    /// <summary>‖θ‖ of the proposal tilt (where θ is a proposal, not the law).</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public float? ProposalTiltNorm { get; init; }
    /// <summary>The black-box method.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public string? BlackBoxMethod { get; init; }
    /// <summary>The proposal tilt's fit.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public JsonObject? TiltFit { get; init; }
    /// <summary>The set-up's network evaluations.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public long? SetupNetworkEvaluations { get; init; }
    /// <summary>Reward evaluations (a network reward's).</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public long? RewardEvaluations { get; init; }
    /// <summary>Evaluations per returned sample.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public EvaluationsPerSample? EvaluationsPerReturnedSample { get; init; }
    /// <summary>The reward network.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public RewardModelReport? RewardModel { get; init; }
    /// <summary>The run's warnings.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public IReadOnlyList<string>? Warnings { get; init; }

    /// <inheritdoc/>
    public override long SideNetworkEvaluations() => (ReferenceNetworkEvaluations ?? 0) + (SetupNetworkEvaluations ?? 0);
}

/// <summary>Best-of-N's block: a baseline, not a sampler of π (DESIGN §8).</summary>
public sealed record BestOfAlignmentReport : KlAlignmentReport
{
    /// <summary>The reward's name.</summary>
    public string? Reward { get; init; }
    /// <summary>λ.</summary>
    public double? Lambda { get; init; }
    /// <summary>The data range, or null.</summary>
    public float[]? DataRange { get; init; }
    /// <summary>What p is.</summary>
    public required string BaseLaw { get; init; }
    /// <summary>What it is exact for (nothing).</summary>
    public required string Exactness { get; init; }
    /// <summary>The reward of the returned samples.</summary>
    public required ValueSummary RewardOfReturnedSamples { get; init; }
    /// <summary>Always <c>kl-black-box</c>.</summary>
    public string Method { get; init; } = "kl-black-box";
    /// <summary>The black-box method.</summary>
    public required string BlackBoxMethod { get; init; }
    /// <summary>A tilt's fit (none for best-of-N).</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public JsonObject? TiltFit { get; init; }
    /// <summary>The set-up's network evaluations.</summary>
    public long SetupNetworkEvaluations { get; init; }
    /// <summary>Reward evaluations.</summary>
    public long RewardEvaluations { get; init; }
    /// <summary>Evaluations per returned sample.</summary>
    public required EvaluationsPerSample EvaluationsPerReturnedSample { get; init; }
    /// <summary>The reward network.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public RewardModelReport? RewardModel { get; init; }
    /// <summary>The run's warnings.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public IReadOnlyList<string>? Warnings { get; init; }

    /// <inheritdoc/>
    public override long SideNetworkEvaluations() => SetupNetworkEvaluations;
}

/// <summary>The KL mixture's block (DESIGN §2).</summary>
public sealed record MixtureAlignmentReport : KlAlignmentReport
{
    /// <summary><c>kl-exact-mixture</c>, <c>kl-hubbard-stratonovich</c> or <c>kl-tangent-mixture</c>.</summary>
    public required string Method { get; init; }
    /// <summary>The reward's name.</summary>
    public required string Reward { get; init; }
    /// <summary>λ.</summary>
    public double? Lambda { get; init; }
    /// <summary>The reward's features.</summary>
    public int Features { get; init; }
    /// <summary>How the component tilts are sampled.</summary>
    public required string ComponentTilts { get; init; }
    /// <summary>The tilts.</summary>
    public required IReadOnlyList<MixtureComponentReport> Components { get; init; }
    /// <summary>The envelope's ε.</summary>
    public double Epsilon { get; init; }
    /// <summary>Proposals (adds up over shards).</summary>
    public long Proposed { get; init; }
    /// <summary>Accepted per proposed.</summary>
    public double AcceptanceRate { get; init; }
    /// <summary>Envelope violations (adds up over shards).</summary>
    public long EnvelopeViolations { get; init; }
    /// <summary>The proposals' network evaluations (adds up over shards).</summary>
    public long SamplingNetworkEvaluations { get; init; }
    /// <summary>Sampling evaluations per accepted sample.</summary>
    public double EvaluationsPerAcceptedSample { get; init; }
    /// <summary>The refinement rounds.</summary>
    public required IReadOnlyList<RefinementRound> Refinement { get; init; }
    /// <summary>The set-up's network evaluations (a run's own set-up).</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public long? SetupNetworkEvaluations { get; init; }
    /// <summary>Where the set-up came from (a plan's).</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public string? Setup { get; init; }
    /// <summary>The plan's set-up network evaluations (reported by each shard, counted by none).</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public long? PlanSetupNetworkEvaluations { get; init; }
    /// <summary>The reward of the samples.</summary>
    public required ValueSummary RewardAfter { get; init; }
    /// <summary>The reference run's network evaluations.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public long? ReferenceNetworkEvaluations { get; init; }
    /// <summary>The reward of the reference samples.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public ValueSummary? RewardBefore { get; init; }
    /// <summary>The run's warnings.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public IReadOnlyList<string>? Warnings { get; init; }
    /// <summary>What p is, when the run was conditioned (DESIGN §9).</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public string? BaseLaw { get; init; }

    /// <inheritdoc/>
    public override long SideNetworkEvaluations() => (ReferenceNetworkEvaluations ?? 0) + (SetupNetworkEvaluations ?? 0);
}

/// <summary>A shard's block of an SMC run: what it ran; the estimates are the merge's (DESIGN §10).</summary>
public sealed record SmcShardAlignmentReport : KlAlignmentReport
{
    /// <summary><c>kl-linear-tilt</c>, <c>kl-exact-smc</c> or <c>kl-black-box</c>.</summary>
    public required string Method { get; init; }
    /// <summary>The reward's name, or null.</summary>
    public string? Reward { get; init; }
    /// <summary>λ, or null.</summary>
    public double? Lambda { get; init; }
    /// <summary>The block of systems.</summary>
    public required SmcBlockReport Smc { get; init; }
    /// <summary>The proposal tilt's fit.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public JsonObject? TiltFit { get; init; }
    /// <summary>The black-box method.</summary>
    [JsonIgnore(Condition = WhenWritingNull)] public string? BlackBoxMethod { get; init; }
    /// <summary>The set-up's network evaluations.</summary>
    public long SetupNetworkEvaluations { get; init; }

    /// <inheritdoc/>
    public override long SideNetworkEvaluations() => SetupNetworkEvaluations;
}

/// <summary>What a KL-aligned run's report needs beside its result: the law, the reward, the settings and the request.</summary>
public sealed record KlReportInputs
{
    /// <summary>The model's denoiser (the base law is it, projected onto <see cref="Range"/>).</summary>
    public required IDenoiser Network { get; init; }
    /// <summary>The data range, or null.</summary>
    public DataRange? Range { get; init; }
    /// <summary>The sampler.</summary>
    public required Sampler Sampler { get; init; }
    /// <summary>The run's request (its seed, batch and count; the reference run shares its seeds).</summary>
    public required GenerationRequest Request { get; init; }
    /// <summary>The reward, or null for a raw θ.</summary>
    public Reward? Reward { get; init; }
    /// <summary>λ, or null for a raw θ.</summary>
    public double? Lambda { get; init; }
    /// <summary>The tilt θ (a raw θ's, or a linear reward's θ = a/λ); a low-rank or network reward's run reports its own proposal tilt instead.</summary>
    public required float[] Theta { get; init; }
    /// <summary>The alignment's settings.</summary>
    public required KlAlignmentSettings Settings { get; init; }
    /// <summary>Untilted reference samples to draw (0: none), with the run's seeds (common random numbers).</summary>
    public int ReferenceCount { get; init; }
    /// <summary>What p is when the run is conditioned or guided (DESIGN §9); null for the network's own law.</summary>
    public string? ConditionedLaw { get; init; }
    /// <summary>Where a plan's data variance came from, when a plan fixed it; null otherwise.</summary>
    public string? PlannedDataVarianceSource { get; init; }
    /// <summary>How the caller says the library's texts (warnings, sources that name an option); null: as they are.</summary>
    public Func<string, string>? Describe { get; init; }
}

/// <summary>Builds a KL-aligned run's <see cref="KlAlignmentReport"/>, running the reference and log Z side runs it asks for.</summary>
public static class KlAlignmentReports
{
    /// <summary>
    /// The block of <paramref name="run"/>; with <see cref="KlReportInputs.ReferenceCount"/> it draws the untilted
    /// reference samples (sample i with stream i) and reports the reward and projection before alignment.
    /// </summary>
    /// <param name="run">The run (<see cref="KlAlignment.Run"/> or <see cref="KlAlignment.RunTilt"/>).</param>
    /// <param name="inputs">What it ran on.</param>
    public static KlAlignmentReport Of(KlAlignmentResult run, KlReportInputs inputs)
    {
        ArgumentNullException.ThrowIfNull(run);
        ArgumentNullException.ThrowIfNull(inputs);
        var describe = inputs.Describe ?? (text => text);
        IReadOnlyList<string>? warnings = run.Warnings.Count > 0 ? run.Warnings.Select(describe).ToArray() : null;
        if (run.Block is { } block) return Shard(run, block, inputs);
        return run.Algorithm switch
        {
            KlAlgorithm.TiltMixture => Mixture(run, inputs) with { Warnings = warnings, BaseLaw = inputs.ConditionedLaw },
            KlAlgorithm.BlackBox when run.Exact is null => BestOf(run, inputs) with { Warnings = warnings },
            KlAlgorithm.ExactTilt or KlAlgorithm.ExactReward or KlAlgorithm.BlackBox => Exact(run, inputs) with { Warnings = warnings },
            _ => Fast(run, inputs) with { Warnings = warnings },
        };
    }

    /// <summary>
    /// log Z(θ) and KL(q‖p) of the fast tilt by path quadrature (DESIGN §1), with sample indices past the run's own (so
    /// independent of it); <paramref name="tiltedSamples"/> (the run's) stand in for the end node's, or null to draw
    /// them too (a plan's estimate, the same for every shard).
    /// </summary>
    /// <param name="inputs">What the run ran on.</param>
    /// <param name="tiltedSamples">The run's samples of q_θ, or null.</param>
    public static TiltLogPartitionReport EstimateLogPartition(KlReportInputs inputs, float[]? tiltedSamples)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        var partition = inputs.Settings.Partition;
        var request = inputs.Request;
        var stats = LogPartition.Estimate(ExactTilt.BaseLaw(inputs.Network, inputs.Range), inputs.Sampler, inputs.Theta, partition.Nodes, partition.SamplesPerNode,
            seed: request.Seed + 1_000_003, batchSize: request.BatchSize,
            tiltedProjections: tiltedSamples is null ? null : LogPartition.Projections(tiltedSamples, inputs.Theta));
        string source = "path quadrature of fast tilts: it assumes the fast tilt samples q_θ exactly, which the drift diagnostic checks; " +
                        $"{OnnxAlignException.Option("mode")} exact gives the returned law's own";
        return new TiltLogPartitionReport(
            new QuadratureEstimate(EstimateReport.FiniteOrNull(stats.LogPartition.Value), EstimateReport.FiniteOrNull(stats.LogPartition.StandardError),
                                   partition.Nodes, partition.SamplesPerNode),
            EstimateReport.Of(stats.KlDivergence, (inputs.Describe ?? (t => t))(source)), stats.NetworkEvaluations);
    }

    private static string BaseLaw(KlReportInputs inputs) => inputs.ConditionedLaw ?? (inputs.Range is null
        ? "the network as it is (no data range known: x̂0 is not projected)"
        : "the network with x̂0 projected onto the data range and ε̂ recomputed (DESIGN §1d); tilts and the base share it");

    private static float[]? RangeOf(KlReportInputs inputs) => inputs.Range is { } r ? [r.Low, r.High] : null;

    /// <summary>The untilted reference run (null without one) and the reward of its samples.</summary>
    private static (GenerationResult Samples, ValueSummary? Reward)? Reference(KlReportInputs inputs, Reward? reward)
    {
        if (inputs.ReferenceCount <= 0) return null;
        var reference = Generation.Run(ExactTilt.BaseLaw(inputs.Network, inputs.Range), inputs.Sampler, inputs.Request.SideRun(inputs.ReferenceCount));
        return (reference, reward is null ? null : ValueSummary.Of(reward.EvaluateBatch(reference.Samples)));
    }

    private static SmcShardAlignmentReport Shard(KlAlignmentResult run, SmcBlock block, KlReportInputs inputs) => new()
    {
        Method = run.Algorithm switch { KlAlgorithm.BlackBox => "kl-black-box", KlAlgorithm.ExactReward => "kl-exact-smc", _ => "kl-linear-tilt" },
        Reward = inputs.Reward?.Name,
        Lambda = inputs.Lambda,
        Smc = new SmcBlockReport(block.Method, block.Systems, [block.Block.First, block.Block.End], inputs.Settings.Exact.Smc.ParticlesPerSystem,
                                 block.Finished.Sum(s => s.Resamplings), block.Finished.Sum(s => s.NonFinite)),
        TiltFit = run.BlackBox?.Fit?.ToJson(withTheta: false),
        BlackBoxMethod = run.BlackBox is { } box ? BlackBoxAlignment.Name(box.Method) : null,
        SetupNetworkEvaluations = run.SetupEvaluations,
    };

    private static FastTiltAlignmentReport Fast(KlAlignmentResult run, KlReportInputs inputs)
    {
        var tilt = run.Tilt ?? throw new ArgumentException("not a fast or hybrid tilt's run", nameof(run));
        bool hybrid = run.Algorithm == KlAlgorithm.HybridTilt;
        var samples = run.Samples.Samples;
        var linear = inputs.Reward as LinearReward;
        var reference = Reference(inputs, linear);
        var variance = hybrid ? run.DataVariance : null;
        return new FastTiltAlignmentReport
        {
            TiltMode = hybrid ? "hybrid" : "fast",
            Exactness = "none guaranteed: the shifted evaluation is exact for the true score only; on a trained network it is biased for strong tilts (DESIGN §1d); see drift",
            Reward = inputs.Reward?.Name,
            Lambda = inputs.Lambda,
            ThetaNorm = TensorPrimitives.Norm(inputs.Theta),
            DataRange = RangeOf(inputs),
            BaseLaw = BaseLaw(inputs),
            MaxShiftRatio = tilt.MaxShiftRatio,
            SurrogateSampleSteps = variance is null ? null : tilt.SurrogateSteps,
            DataVariance = variance?.Value,
            DataVarianceSource = variance is not { } v ? null
                : inputs.PlannedDataVarianceSource is { } planned ? $"the plan: {planned}"
                : v.Estimated ? $"estimated from {inputs.Settings.VarianceSamples} base samples" : "data_moments.json",
            DataVarianceNetworkEvaluations = variance is { Estimated: true } ? run.SetupEvaluations : null,
            TrustRadius = variance is null ? null : inputs.Settings.TrustRadius,
            Drift = DriftBlock.Of(run.Drift!),
            RewardAfter = linear is null ? null : ValueSummary.Of(linear.EvaluateBatch(samples)),
            ReferenceNetworkEvaluations = reference?.Samples.NetworkEvaluations,
            RewardBefore = reference?.Reward,
            ThetaProjectionBefore = reference is { } r ? ValueSummary.Of(LogPartition.Projections(r.Samples.Samples, inputs.Theta)) : null,
            ThetaProjectionAfter = ValueSummary.Of(LogPartition.Projections(samples, inputs.Theta)),
            KlDivergence = hybrid ? new NoEstimate(null, "the hybrid tilt's law has no known log Z: the path quadrature would give the exact tilt's, not this law's") : null,
        };
    }

    private static ExactAlignmentReport Exact(KlAlignmentResult run, KlReportInputs inputs)
    {
        var result = run.Exact!;
        var particles = result.Particles;
        var settings = inputs.Settings.Exact;
        bool stochastic = inputs.Sampler.IsStochastic;
        // The exact tilt samples the θ it was given; a low-rank or network reward's run reports its proposal tilt's θ.
        var theta = run.Algorithm == KlAlgorithm.ExactTilt ? inputs.Theta : run.Theta;
        ValueSummary? returned = null;
        WeightedSummary? after = null;
        if (inputs.Reward is { } reward)
        {
            // A reward's own potential G = r/λ was evaluated at every particle by the run: r = λ·G, no second pass of a network.
            var rewards = run.Algorithm is KlAlgorithm.ExactReward or KlAlgorithm.BlackBox && inputs.Lambda is { } lambda
                ? result.Potentials.Select(g => g * lambda).ToArray()
                : reward.EvaluateBatch(particles.Samples);
            var mean = particles.Mean(rewards);
            after = new WeightedSummary(mean.Value, mean.StandardError, particles.StandardDeviation(rewards), "the weighted particles");
            returned = ValueSummary.Of(result.Picks.Select(i => rewards[i]).ToArray());
        }
        var reference = Reference(inputs, inputs.Reward);
        var report = new ExactAlignmentReport
        {
            Method = "kl-linear-tilt",
            Exactness = stochastic
                ? "twisted SMC with exact path weights (transition-density ratios of the base and tilted steps): consistent for p·e^{⟨θ,x⟩}, p = this sampler's law, as the number of systems grows"
                : "tempered SMC on the initial noise with pCN moves: consistent for p·e^{⟨θ,x⟩}, p = this deterministic sampler's law, as the number of systems grows",
            Smc = new SmcReport(result.Method, stochastic ? settings.ProposalScale : null, settings.Smc.ParticlesPerSystem, particles.SystemSizes.Count, particles.Count,
                                particles.EffectiveSampleSize, particles.SystemEffectiveSize, result.TargetEffectiveSampleSize, result.ReachedTarget, particles.Resamplings,
                                result.DistinctSamples, particles.EvaluationsPerEffectiveSample, result.Systems.Sum(s => s.NonFinite)),
            Reward = inputs.Reward?.Name,
            Lambda = inputs.Lambda,
            ThetaNorm = TensorPrimitives.Norm(theta),
            DataRange = RangeOf(inputs),
            BaseLaw = BaseLaw(inputs),
            LogPartition = EstimateReport.Of(result.LogPartition, "the run's own Ẑ (product of the SMC stages' mean weights, across systems)"),
            KlDivergence = EstimateReport.Of(result.KlDivergence, "E_π[G(x)] − log Z from the run's weights (G = ⟨θ,x⟩, or f(Ax)/λ for a low-rank reward)"),
            RewardAfter = after,
            RewardOfReturnedSamples = returned,
            ThetaProjectionAfter = new MeanEstimate(result.MeanPotential.Value, result.MeanPotential.StandardError),
            ReferenceNetworkEvaluations = reference?.Samples.NetworkEvaluations,
            RewardBefore = reference?.Reward,
            ThetaProjectionBefore = reference is { } r ? ValueSummary.Of(LogPartition.Projections(r.Samples.Samples, theta)) : null,
        };
        if (run.Algorithm == KlAlgorithm.ExactReward)
            // The proposal tilt stands where a linear tilt's θ does (norm, projections); the law is p·e^{f(Ax)/λ}.
            return report with
            {
                Method = "kl-exact-smc",
                Exactness = (stochastic
                    ? "twisted SMC with exact path weights, potential f(Ax)/λ, a tangent tilt as proposal (DESIGN §8)"
                    : "tempered SMC on the initial noise with pCN moves, potential f(Ax)/λ") + ": consistent for p·e^{f(Ax)/λ}, p = this sampler's law, as the number of systems grows",
                Features = (inputs.Reward as FeatureReward)?.FeatureCount,
                ThetaNorm = null,
                ProposalTiltNorm = report.ThetaNorm,
                SetupNetworkEvaluations = run.SetupEvaluations,
            };
        if (run.Algorithm != KlAlgorithm.BlackBox) return report;
        var box = run.BlackBox!;
        return report with
        {
            Method = "kl-black-box",
            Exactness = result.Method == "noise-space-smc"
                ? "tempered SMC on the initial noise with pCN moves, potential r/λ: consistent for p·e^{r/λ}, p = this deterministic sampler's law, as the number of systems grows"
                : $"{(box.Method is BlackBoxMethod.TiltSmc or BlackBoxMethod.FeynmanKac ? "twisted SMC" : "importance sampling")} with exact path weights, potential r/λ, " +
                  $"{(box.Fit is null ? "the base law" : "a fitted tilt")} as proposal (DESIGN §8): consistent for p·e^{{r/λ}}, p = this sampler's law, as the number of systems grows",
            Smc = report.Smc with { ProposalScale = box.Fit?.Scale ?? 0 },   // the fitted tilt's scale (0: the base law)
            LogPartition = report.LogPartition with { Source = "log Z_π = log E_p[e^{r/λ}], the run's own Ẑ (product of the SMC stages' mean weights, across systems)" },
            KlDivergence = report.KlDivergence with { Source = "KL(π‖p) = E_π[r/λ] − log Z_π from the run's weights" },
            ThetaNorm = null,
            ThetaProjectionAfter = null,
            ProposalTiltNorm = report.ThetaNorm,
        } with
        {
            BlackBoxMethod = BlackBoxAlignment.Name(box.Method),
            TiltFit = box.Fit?.ToJson(withTheta: false),
            SetupNetworkEvaluations = run.SetupEvaluations,
            RewardEvaluations = RewardEvaluations(box),
            EvaluationsPerReturnedSample = PerSample(run, box, inputs),
            RewardModel = RewardModel(inputs.Reward),
        };
    }

    private static long RewardEvaluations(BlackBoxRun box) => box.RewardEvaluations + (box.Fit?.RewardEvaluations ?? 0);

    private static EvaluationsPerSample PerSample(KlAlignmentResult run, BlackBoxRun box, KlReportInputs inputs) =>
        new((double)(run.Samples.NetworkEvaluations + run.SetupEvaluations) / inputs.Request.Count, (double)RewardEvaluations(box) / inputs.Request.Count);

    private static RewardModelReport? RewardModel(Reward? reward) =>
        (reward as OnnxReward ?? (reward as DecodedReward)?.Inner as OnnxReward) is { } network
            ? new RewardModelReport(reward is DecodedReward ? "decoded images (vae_decoder)" : "samples", network.Card.Source, network.Card.ModelPath,
                                    network.Model.OutputName, network.Index, network.IndexName, network.Card.Transform, network.Model.InputShape)
            : null;

    private static BestOfAlignmentReport BestOf(KlAlignmentResult run, KlReportInputs inputs)
    {
        var box = run.BlackBox!;
        return new BestOfAlignmentReport
        {
            Reward = inputs.Reward?.Name,
            Lambda = inputs.Lambda,
            DataRange = RangeOf(inputs),
            BaseLaw = BaseLaw(inputs),
            Exactness = $"none: best-of-{inputs.Settings.BlackBox.BestOf} keeps the largest reward of N base draws; it does not sample p·e^{{r/λ}} (a baseline)",
            RewardOfReturnedSamples = ValueSummary.Of(inputs.Reward!.EvaluateBatch(run.Samples.Samples)),
            BlackBoxMethod = BlackBoxAlignment.Name(box.Method),
            TiltFit = box.Fit?.ToJson(withTheta: false),
            SetupNetworkEvaluations = run.SetupEvaluations,
            RewardEvaluations = RewardEvaluations(box),
            EvaluationsPerReturnedSample = PerSample(run, box, inputs),
            RewardModel = RewardModel(inputs.Reward),
        };
    }

    private static MixtureAlignmentReport Mixture(KlAlignmentResult run, KlReportInputs inputs)
    {
        var drawn = run.Mixture!;
        var reward = (FeatureReward)inputs.Reward!;
        bool planned = inputs.Settings.Envelope is not null;
        var reference = Reference(inputs, reward);
        return new MixtureAlignmentReport
        {
            Method = drawn.Method switch
            {
                MixtureMethod.ExactMixture => "kl-exact-mixture",
                MixtureMethod.HubbardStratonovich => "kl-hubbard-stratonovich",
                _ => "kl-tangent-mixture",
            },
            Reward = reward.Name,
            Lambda = inputs.Lambda,
            Features = reward.FeatureCount,
            ComponentTilts = "fast (the shifted evaluation of the projected base law): exact for the true score; on a trained network the components carry the fast tilt's bias (DESIGN §1d)",
            Components = drawn.Components.Select(c => new MixtureComponentReport(c.U, c.Intercept, c.LogPartition.Value, c.LogPartition.StandardError, c.Weight)).ToArray(),
            Epsilon = drawn.Epsilon,
            // Counts add up over shards (merge sums them and recomputes the two rates from the sums).
            Proposed = drawn.Proposed,
            AcceptanceRate = drawn.AcceptanceRate,
            EnvelopeViolations = drawn.EnvelopeViolations,
            SamplingNetworkEvaluations = drawn.SamplingEvaluations,
            EvaluationsPerAcceptedSample = (double)drawn.SamplingEvaluations / Math.Max(drawn.Count, 1),
            Refinement = drawn.Refinement,
            // The plan's set-up, made once for every shard: reported by each, counted by none (merge keeps it once).
            SetupNetworkEvaluations = planned ? null : drawn.SetupEvaluations,
            Setup = planned ? "the plan's (computed once for all shards)" : null,
            PlanSetupNetworkEvaluations = planned ? drawn.SetupEvaluations : null,
            RewardAfter = ValueSummary.Of(reward.EvaluateBatch(drawn.Samples)),
            ReferenceNetworkEvaluations = reference?.Samples.NetworkEvaluations,
            RewardBefore = reference?.Reward,
        };
    }
}
