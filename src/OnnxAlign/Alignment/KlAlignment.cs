using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using OnnxAlign.Core;
using OnnxAlign.Estimation;
using OnnxAlign.Guidance;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment;

/// <summary>How a linear tilt q ∝ p·e^{⟨θ,x⟩} is sampled (DESIGN §1d).</summary>
public enum KlTiltMode
{
    /// <summary>SMC with exact weights, the projected tilt as proposal: consistent for the tilt on any network.</summary>
    Exact,
    /// <summary>The projected tilt in the plain sampler loop (one network call per step): exact for the true score only, biased for strong tilts on trained networks.</summary>
    Fast,
    /// <summary>A Gaussian surrogate where the shift is large (DESIGN §1b): approximate.</summary>
    Hybrid,
}

/// <summary>The algorithm <see cref="KlAlignment"/> picked from the reward's structure and the mode.</summary>
public enum KlAlgorithm
{
    /// <summary>One linear tilt, sampled exactly (<see cref="ExactTilt"/>).</summary>
    ExactTilt,
    /// <summary>One linear tilt, the fast projected tilt.</summary>
    FastTilt,
    /// <summary>One linear tilt, the hybrid surrogate.</summary>
    HybridTilt,
    /// <summary>A convex low-rank reward f(Ax) in the fast mode: a mixture of (fast) tilts with rejection (DESIGN §2, <see cref="TiltMixtureSampler"/>), exact for the true score.</summary>
    TiltMixture,
    /// <summary>
    /// A convex low-rank reward f(Ax) in the exact mode: π ∝ p·e^{f(Ax)/λ} by SMC with exact weights, potential f(Ax)/λ and
    /// a tangent tilt as proposal (DESIGN §8, <c>ExactTilt.SampleTarget</c>): consistent on any network.
    /// </summary>
    ExactReward,
    /// <summary>
    /// A reward without structure (a network, <see cref="Reward.IsBlackBox"/>): DESIGN §8's methods, by default twisted SMC
    /// with a fitted tilt as proposal and exact path weights (<see cref="BlackBoxAlignment"/>): consistent on any network.
    /// </summary>
    BlackBox,
}

/// <summary>The options of a KL alignment (those of <c>onnxalign generate --align kl</c>).</summary>
public sealed record KlAlignmentSettings
{
    /// <summary>How a linear tilt is sampled; a mixture's proposals are always the fast tilts of its components.</summary>
    public KlTiltMode Mode { get; init; } = KlTiltMode.Exact;

    /// <summary>The exact mode's SMC settings; the count, seed and NaN policy are the request's.</summary>
    public ExactTiltSettings Exact { get; init; } = new();

    /// <summary>Hybrid: use the surrogate where c_t‖θ‖ exceeds this multiple of the typical ‖x_t‖.</summary>
    public double TrustRadius { get; init; } = 1.0;

    /// <summary>Hybrid: the data's per-coordinate variance (<see cref="DataMoments"/>); null estimates it from <see cref="VarianceSamples"/> base samples.</summary>
    public double? DataVariance { get; init; }

    /// <summary>Hybrid: base samples that estimate the data variance when none is given.</summary>
    public int VarianceSamples { get; init; } = 256;

    /// <summary>
    /// A convex low-rank reward in the exact mode: the proposal tangent tilt θ computed before (a plan's global set-up,
    /// DESIGN §10), used instead of running the pilot that places it; null runs the pilot. Any θ gives exact weights: it
    /// only sets the ESS, never the law.
    /// </summary>
    public float[]? ProposalTilt { get; init; }

    /// <summary>A reward without structure: the method, the tilt fit and best-of-N's N (DESIGN §8).</summary>
    public BlackBoxSettings BlackBox { get; init; } = new();

    /// <summary>Mixture: Gauss–Legendre nodes and tilted samples per node of each component's log Z.</summary>
    public LogPartitionSettings Partition { get; init; } = new() { Nodes = 6, SamplesPerNode = 64 };

    /// <summary>
    /// Mixture: the set-up computed before for this reward, λ and seed (<see cref="KlAlignment.PrepareMixture"/>; a plan's,
    /// DESIGN §10), so that every shard samples with the same envelope; null computes it (or reads it from the checkpoint).
    /// </summary>
    public MixtureEnvelope? Envelope { get; init; }

    /// <summary>Where the aligner says what it did (information) and what the caller should know about the result (warnings: degenerate weights, a drifting fast tilt); none by default.</summary>
    public ILogger Logger { get; init; } = NullLogger.Instance;

    /// <summary>Checks the values (count and seed belong to the request).</summary>
    /// <exception cref="ArgumentOutOfRangeException">A value out of range.</exception>
    public KlAlignmentSettings Validated()
    {
        Exact.Validated();
        BlackBox.Validated();
        if (!(TrustRadius > 0) || double.IsInfinity(TrustRadius)) throw new ArgumentOutOfRangeException(nameof(TrustRadius), TrustRadius, "expected a finite value > 0");
        if (DataVariance is { } v && (!(v > 0) || double.IsInfinity(v))) throw new ArgumentOutOfRangeException(nameof(DataVariance), v, "expected a finite value > 0");
        if (VarianceSamples < 2) throw new ArgumentOutOfRangeException(nameof(VarianceSamples), VarianceSamples, "expected ≥ 2");
        return this;
    }
}

/// <summary>What a KL alignment returned: the samples and what the report needs of the algorithm that drew them.</summary>
public sealed class KlAlignmentResult
{
    internal KlAlignmentResult(KlAlgorithm algorithm, GenerationResult samples, float[] theta)
    {
        Algorithm = algorithm;
        Samples = samples;
        Theta = theta;
    }

    /// <summary>The algorithm that drew the samples.</summary>
    public KlAlgorithm Algorithm { get; }

    /// <summary>The samples (returned by resampling for the exact tilt, accepted proposals for the mixture).</summary>
    public GenerationResult Samples { get; }

    /// <summary>θ of a linear tilt; empty for a mixture.</summary>
    public float[] Theta { get; }

    /// <summary>The exact tilt's SMC run (weights, ESS, log Z and KL of the returned law); null otherwise.</summary>
    public ExactTiltResult? Exact { get; internal init; }

    /// <summary>
    /// The block of SMC systems a shard ran (<see cref="ExactTiltSettings.Block"/>, DESIGN §10): neither combined nor
    /// resampled, so <see cref="Samples"/> is empty and <see cref="Exact"/> null; null otherwise.
    /// </summary>
    public SmcBlock? Block { get; internal init; }

    /// <summary>The fast or hybrid tilt's denoiser (largest shift ratio, surrogate steps); null otherwise.</summary>
    public LinearTilt? Tilt { get; internal init; }

    /// <summary>The drift diagnostic of the fast or hybrid run (DESIGN §1d); null otherwise.</summary>
    public DriftReport? Drift { get; internal init; }

    /// <summary>A black-box run's method, fitted tilt and reward evaluations; null otherwise.</summary>
    public BlackBoxRun? BlackBox { get; internal init; }

    /// <summary>The mixture's run (components, envelope, acceptance); null otherwise.</summary>
    public TiltMixtureResult? Mixture { get; internal init; }

    /// <summary>Hybrid: the data variance the surrogate used, and whether it was estimated here.</summary>
    public (double Value, bool Estimated)? DataVariance { get; internal init; }

    /// <summary>
    /// What the caller should know about these samples (also logged as warnings): degenerate SMC weights, an ESS below
    /// the target, a drifting fast tilt, dropped or envelope-violating proposals. Other options are named as
    /// <see cref="OnnxAlignException.Option"/> does.
    /// </summary>
    public IReadOnlyList<string> Warnings { get; internal set; } = [];

    /// <summary>The mixture's set-up (log Z of its terms, pilot rounds) was read from the checkpoint, not computed.</summary>
    public bool ResumedSetup { get; internal init; }

    /// <summary>Network evaluations outside <see cref="Samples"/> (the hybrid's variance batch, the mixture's set-up).</summary>
    public long SetupEvaluations { get; internal init; }
}

/// <summary>
/// KL alignment, q ∝ p·e^{r/λ}: the algorithm is chosen from the reward's structure (DESIGN §1, §2), as
/// <see cref="Prox.ProxOracle"/> chooses the prox's — a linear reward is one tilt θ = a/λ, a convex low-rank reward
/// f(Ax) with a supported f is a mixture of tilts (or SMC on f(Ax)/λ), a reward without structure (a network) is
/// sampled by DESIGN §8's black-box methods, and a low-rank reward no exact method serves is refused with what would serve it.
/// </summary>
public static class KlAlignment
{
    /// <summary>The mixture's set-up note in a checkpoint: resuming repeats neither its log Z nor its pilot rounds.</summary>
    private const string MixtureNote = "mixture.json";

    /// <summary>The algorithm of a raw tilt θ (<see cref="RunTilt"/>) in <paramref name="mode"/>: the exact, fast or hybrid tilt.</summary>
    public static KlAlgorithm ChooseForTilt(KlTiltMode mode) => mode switch
    {
        KlTiltMode.Exact => KlAlgorithm.ExactTilt,
        KlTiltMode.Fast => KlAlgorithm.FastTilt,
        _ => KlAlgorithm.HybridTilt,
    };

    /// <summary>Whether <paramref name="algorithm"/> samples by SMC with exact weights (the exact tilt, the exact low-rank reward, the black-box methods).</summary>
    public static bool IsExact(KlAlgorithm algorithm) => algorithm is KlAlgorithm.ExactTilt or KlAlgorithm.ExactReward or KlAlgorithm.BlackBox;

    /// <summary>
    /// Whether <paramref name="algorithm"/> runs SMC systems that a plan can fix and shards can split (DESIGN §10): every
    /// exact method but best-of-N, which has no weights.
    /// </summary>
    public static bool IsSmc(KlAlgorithm algorithm, BlackBoxSettings blackBox)
    {
        ArgumentNullException.ThrowIfNull(blackBox);
        return IsExact(algorithm) && !(algorithm == KlAlgorithm.BlackBox && blackBox.Method == BlackBoxMethod.BestOfN);
    }

    /// <summary>The algorithm for <paramref name="reward"/> at <paramref name="lambda"/> in <paramref name="mode"/>.</summary>
    /// <exception cref="ConfigException">The reward has no exact KL algorithm (parameter <c>reward</c>), or the mode does not apply to it (parameter <c>mode</c>).</exception>
    public static KlAlgorithm Choose(Reward reward, double lambda, KlTiltMode mode = KlTiltMode.Exact)
    {
        CheckLambda(lambda);
        switch (reward)
        {
            case { IsBlackBox: true }:
                return mode == KlTiltMode.Exact ? KlAlgorithm.BlackBox
                    : throw ConfigException.For("mode", $"'{reward.Name}' is a reward without structure (a network): it is sampled by the black-box methods (DESIGN §8), which have no fast or hybrid mode");
            case LinearReward:
                return mode switch { KlTiltMode.Exact => KlAlgorithm.ExactTilt, KlTiltMode.Fast => KlAlgorithm.FastTilt, _ => KlAlgorithm.HybridTilt };
            case FeatureReward features when TiltMixtureSampler.Supports(features, lambda, out string? why) is null:
                throw ConfigException.For("reward", $"'{reward.Name}' for KL alignment: {why}. Linear rewards ({RewardSpec.LinearForms}) use one exact tilt; Wasserstein alignment takes any of the reward forms");
            case FeatureReward:
                return mode switch
                {
                    KlTiltMode.Exact => KlAlgorithm.ExactReward,
                    KlTiltMode.Fast => KlAlgorithm.TiltMixture,
                    _ => throw ConfigException.For("mode", "Hybrid applies to linear rewards; a convex low-rank reward is sampled exactly (SMC) or by the fast mixture of tilts"),
                };
            default:
                throw ConfigException.For("reward", $"'{reward.Name}': no KL algorithm for a {reward.GetType().Name}");
        }
    }

    /// <summary>
    /// Samples q ∝ p·e^{r/λ} for a reward with declared structure. <paramref name="network"/> is the model's
    /// denoiser as it is; the base law p is it with x̂0 projected onto <paramref name="range"/> when that is known
    /// (DESIGN §1d). The request gives count, batch, seed, NaN policy and cancellation.
    /// </summary>
    /// <param name="network">The model's denoiser (not disposed here: the caller owns it).</param>
    /// <param name="range">The data range x̂0 is projected onto (<see cref="DiffusionModel.DataRange"/>); null for none.</param>
    /// <param name="sampler">The sampler whose law is p.</param>
    /// <param name="reward">The reward; its structure picks the algorithm.</param>
    /// <param name="lambda">The temperature λ &gt; 0 (smaller is stronger).</param>
    /// <param name="settings">The mode and the algorithms' settings.</param>
    /// <param name="request">Count, batch, seed, NaN policy and cancellation (the shard applies to the fast and hybrid tilts and the mixture, initial noise to the fast and hybrid tilts).</param>
    /// <param name="checkpoint">Where finished work is kept so that a resumed run repeats none (SMC systems, mixture set-up and proposals, fast batches); null for none.</param>
    /// <param name="progress">Samples finished of the request's count (for the exact tilt: effective samples of the target).</param>
    /// <param name="systems">
    /// Finished SMC systems to take instead of running them (the shards' blocks of a planned run, <see cref="SmcSystemSet"/>),
    /// before the checkpoint's; null for none. With <see cref="ExactTiltSettings.Block"/> set, the SMC methods run only that
    /// block and return it (<see cref="KlAlignmentResult.Block"/>).
    /// </param>
    /// <exception cref="ConfigException">No KL algorithm for the reward (see <see cref="Choose"/>).</exception>
    /// <exception cref="NonFiniteException">A sample turned NaN/±∞ under <see cref="NonFinitePolicy.Stop"/>.</exception>
    /// <exception cref="OperationCanceledException">The request's cancellation fired (within one network call).</exception>
    public static KlAlignmentResult Run(IDenoiser network, DataRange? range, Sampler sampler, Reward reward, double lambda, KlAlignmentSettings settings,
                                        GenerationRequest request, IProgress<GenerationProgress>? progress = null, BatchCheckpoint? checkpoint = null,
                                        ISmcSystemStore? systems = null)
    {
        var algorithm = Choose(reward, lambda, settings.Mode);
        if (algorithm == KlAlgorithm.BlackBox)
            return Reviewed(BlackBoxAlignment.Run(network, range, sampler, reward, lambda, settings.Validated().BlackBox, settings.Exact, request, progress, checkpoint, systems), settings.Logger);
        if (algorithm == KlAlgorithm.ExactReward)
            return Reviewed(RunExactReward(network, range, sampler, (FeatureReward)reward, lambda, settings.Validated(), request, progress, Store(checkpoint, systems)), settings.Logger);
        if (algorithm != KlAlgorithm.TiltMixture)
            return RunTilt(network, range, sampler, TiltOf((LinearReward)reward, lambda), settings, request, progress, checkpoint, systems);
        return Reviewed(RunMixture(network, range, sampler, (FeatureReward)reward, lambda, settings.Validated(), request, progress, checkpoint), settings.Logger);
    }

    /// <summary>The result with its warnings, each also logged; an information line says what was done.</summary>
    private static KlAlignmentResult Reviewed(KlAlignmentResult result, ILogger logger)
    {
        var warnings = new List<string>();
        string O(string name) => OnnxAlignException.Option(name);
        if (result.Exact is { } exact)
        {
            var particles = exact.Particles;
            if (particles.SystemSizes.Count >= 4 && particles.SystemEffectiveSize < 0.5 * particles.SystemSizes.Count)
                warnings.Add($"the SMC systems' normalising constants are degenerate ({particles.SystemEffectiveSize:F1} effective of {particles.SystemSizes.Count} systems): " +
                             $"the estimates rest on few systems and their standard errors are optimistic; raise {O("SmcSettings.ParticlesPerSystem")} (larger systems) or λ");
            if (exact.KlDivergence.Value < -2 * exact.KlDivergence.StandardError)
                warnings.Add($"the KL estimate {exact.KlDivergence.Value:G3} ± {exact.KlDivergence.StandardError:G2} is negative beyond its noise: the SMC's weights are degenerate; " +
                             $"raise {O("ExactTiltSettings.MaxParticlesPerSample")} or {O("SmcSettings.ParticlesPerSystem")}");
            if (!exact.ReachedTarget)
                warnings.Add($"the SMC's effective sample size {particles.EffectiveSampleSize:F1} is below the target {exact.TargetEffectiveSampleSize:F0} after {particles.Count} particles " +
                             $"({O("ExactTiltSettings.MaxParticlesPerSample")}); the {exact.Picks.Length} returned samples hold {exact.DistinctSamples} distinct ones");
            logger.LogInformation("exact tilt ({Method}): ESS {Ess:F0} of {Particles} particles, {Cost:F0} network evaluations per effective sample, KL {Kl:G4} ± {KlSe:G2}",
                exact.Method, particles.EffectiveSampleSize, particles.Count, particles.EvaluationsPerEffectiveSample, exact.KlDivergence.Value, exact.KlDivergence.StandardError);
        }
        if (result.Drift is { IsDrifting: true } drift)
        {
            var worst = drift.Directions.Where(d => d.IsDrifting).MaxBy(d => d.MaxRelativeDrift)!;
            warnings.Add($"the tilted sampler drifts (DESIGN §1d): along '{worst.Name}', x̂0 moves by {worst.MaxRelativeDrift:F2} sd (z = {worst.MaxAbsZ:F1}) at step {worst.WorstStep + 1}, " +
                         $"so it does not sample the tilt it is meant to; the exact mode ({O("KlAlignmentSettings.Mode")} exact) corrects this");
        }
        if (result.Mixture is { } drawn)
        {
            if (drawn.Skipped.Count > 0)
                warnings.Add($"dropped {drawn.Skipped.Count} samples whose proposals turned NaN/±∞ (sample indices " +
                             $"{string.Join(", ", drawn.Skipped.Take(10))}{(drawn.Skipped.Count > 10 ? ", …" : "")})");
            if (drawn.EnvelopeViolations > 0)
                warnings.Add($"{drawn.EnvelopeViolations} of {drawn.Proposed} proposals exceeded the envelope (ε = {drawn.Epsilon:G4})");
            logger.LogInformation("KL mixture ({Method}): {Terms} tilts, acceptance {Acceptance:P1}, {Cost:F0} network evaluations per accepted sample",
                drawn.Method, drawn.Components.Count, drawn.AcceptanceRate, drawn.EvaluationsPerAccepted);
        }
        foreach (var warning in warnings) logger.LogWarning("{Warning}", warning);
        result.Warnings = warnings;
        return result;
    }

    /// <summary>θ = a/λ of a linear reward.</summary>
    /// <exception cref="ConfigException">λ is not finite and positive, or θ overflows (parameter <c>lambda</c>).</exception>
    public static float[] TiltOf(LinearReward reward, double lambda)
    {
        CheckLambda(lambda);
        var theta = reward.Tilt(lambda);
        if (theta.Any(v => !float.IsFinite(v))) throw ConfigException.For("lambda", $"{lambda}: θ = a/λ overflows (not finite); use a larger λ");
        return theta;
    }

    /// <summary>Samples the linear tilt p·e^{⟨θ,x⟩} in the settings' mode (a raw θ; <see cref="Run"/> takes a reward).</summary>
    /// <param name="network">The model's denoiser (not disposed here: the caller owns it).</param>
    /// <param name="range">The data range x̂0 is projected onto; null for none.</param>
    /// <param name="sampler">The sampler whose law is p.</param>
    /// <param name="theta">θ, one sample's values.</param>
    /// <param name="settings">The mode and the algorithms' settings.</param>
    /// <param name="request">Count, batch, seed, NaN policy and cancellation.</param>
    /// <param name="progress">Samples finished of the request's count (exact tilt: effective samples of the target).</param>
    /// <param name="checkpoint">Where finished work is kept for a resume; null for none.</param>
    /// <param name="systems">Finished SMC systems to take instead of running them (as <see cref="Run"/>'s); null for none.</param>
    public static KlAlignmentResult RunTilt(IDenoiser network, DataRange? range, Sampler sampler, float[] theta, KlAlignmentSettings settings,
                                            GenerationRequest request, IProgress<GenerationProgress>? progress = null, BatchCheckpoint? checkpoint = null,
                                            ISmcSystemStore? systems = null)
    {
        settings.Validated();
        if (theta.Length != network.SampleSize) throw new ArgumentException($"θ has {theta.Length} values, the model's samples have {network.SampleSize}", nameof(theta));
        if (theta.Any(v => !float.IsFinite(v))) throw ConfigException.For("theta", ": contains NaN or infinite values");
        if (settings.Mode == KlTiltMode.Exact)
        {
            var (potential, proposal) = ExactTilt.TiltTarget(theta, settings.Exact.ProposalScale);
            var (exact, block, samples) = Smc(network, range, sampler, potential, proposal, settings.Exact, request, progress, Store(checkpoint, systems));
            return Reviewed(new KlAlignmentResult(KlAlgorithm.ExactTilt, samples, theta) { Exact = exact, Block = block }, settings.Logger);
        }

        var baseLaw = ExactTilt.BaseLaw(network, range);
        long setup = 0;
        (double, bool)? variance = null;
        LinearTilt tilt;
        if (settings.Mode == KlTiltMode.Hybrid)
        {
            // DESIGN §1b: the surrogate needs the data's variance: the model's, else a batch of base samples.
            double value;
            if (settings.DataVariance is { } known) value = known;
            else (value, setup) = EstimateDataVariance(network, sampler, request, settings.VarianceSamples);
            variance = (value, settings.DataVariance is null);
            tilt = new LinearTilt(network, theta, TiltMode.Hybrid, new HybridSurrogate(value, settings.TrustRadius));
        }
        else tilt = new LinearTilt(baseLaw, theta);
        IDenoiser guided = settings.Mode == KlTiltMode.Hybrid && range is { } r ? new DenoisedProjection(tilt, r) : tilt;
        var drift = new DriftDiagnostic(DriftDiagnostic.DefaultDirections(theta), sampler);
        var result = Generation.Run(guided, sampler, request with { Checkpoint = checkpoint ?? request.Checkpoint },
                                    progress is null ? null : progress.Report, drift);
        return Reviewed(new KlAlignmentResult(settings.Mode == KlTiltMode.Hybrid ? KlAlgorithm.HybridTilt : KlAlgorithm.FastTilt, result, theta)
        {
            Tilt = tilt, Drift = drift.Report(), DataVariance = variance, SetupEvaluations = setup,
        }, settings.Logger);
    }

    /// <summary>
    /// The hybrid surrogate's data variance (DESIGN §1b) where the model declares none: the mean per-coordinate variance
    /// of <paramref name="samples"/> base samples of the request's seed (a side run: no shard, no initial noise), so every
    /// shard of a run, and a plan made for them, finds the same value.
    /// </summary>
    public static (double Variance, long NetworkEvaluations) EstimateDataVariance(IDenoiser network, Sampler sampler, GenerationRequest request, int samples)
    {
        var batch = Generation.Run(network, sampler, request.SideRun(samples));
        return (Numerics.ColumnVariances(batch.Samples, network.SampleSize).Average(), batch.NetworkEvaluations);
    }

    /// <summary>Base samples and fast-tilt samples that place the proposal tilt (not the law: any proposal is exact under SMC).</summary>
    private const int PilotSamples = 64;

    /// <summary>
    /// π ∝ p·e^{f(Ax)/λ} by <c>ExactTilt.SampleTarget</c>. The proposal is the tangent tilt θ = Aᵀ∇g(z) at z, the
    /// features' mean after two mean-field steps z ← E_{q_{∇g(z)}}[Ax] from the base mean (DESIGN §2's start): it only
    /// sets the ESS, never the law.
    /// </summary>
    private static KlAlignmentResult RunExactReward(IDenoiser network, DataRange? range, Sampler sampler, FeatureReward reward, double lambda,
                                                    KlAlignmentSettings settings, GenerationRequest request, IProgress<GenerationProgress>? progress,
                                                    ISmcSystemStore? store)
    {
        using var cancellation = NetworkCancellation.Enter(request.Cancellation);
        BatchPotential potential = Potentials.Batch(x => reward.Evaluate(x) / lambda);
        if (settings.ProposalTilt is { } planned)
        {
            // A plan placed the proposal once for all shards (DESIGN §10): no pilot here.
            if (planned.Length != network.SampleSize) throw new ArgumentException($"the proposal tilt has {planned.Length} values, the model's samples have {network.SampleSize}", nameof(settings));
            var (fixedExact, fixedBlock, fixedSamples) = Smc(network, range, sampler, potential, planned, settings.Exact, request, progress, store);
            return new KlAlignmentResult(KlAlgorithm.ExactReward, fixedSamples, planned) { Exact = fixedExact, Block = fixedBlock };
        }
        int k = reward.FeatureCount;
        var baseLaw = ExactTilt.BaseLaw(network, range);
        var pilot = request.SideRun(PilotSamples) with { BatchSize = Math.Min(request.BatchSize, PilotSamples), Seed = request.Seed + 3_000_017 };
        var run = Generation.Run(baseLaw, sampler, pilot);
        long setup = run.NetworkEvaluations;
        double[] MeanFeatures(float[] samples)
        {
            var z = reward.ProjectBatch(samples);
            return Enumerable.Range(0, k).Select(j => z.Average(row => row[j])).ToArray();
        }
        float[] TangentTilt(double[] z)
        {
            var gradient = new double[k];
            reward.Function.Gradient(z, gradient);
            return reward.Transposed(gradient.Select(g => g / lambda).ToArray());
        }
        var theta = TangentTilt(MeanFeatures(run.Samples));
        for (int step = 0; step < 2; step++)
        {
            run = Generation.Run(ExactTilt.FastTilt(network, theta, range), sampler, pilot);
            setup += run.NetworkEvaluations;
            if (!run.Samples.All(float.IsFinite)) break;   // keep the last finite proposal; the law does not depend on it
            theta = TangentTilt(MeanFeatures(run.Samples));
        }
        var (exact, block, samples) = Smc(network, range, sampler, potential, theta, settings.Exact, request, progress, store);
        return new KlAlignmentResult(KlAlgorithm.ExactReward, samples, theta) { Exact = exact, Block = block, SetupEvaluations = setup };
    }

    /// <summary>
    /// An SMC run of the exact mode (a tilt, a low-rank reward's or a network reward's potential) with the request's count,
    /// seed and NaN policy, its progress as samples and its systems in the store: the whole run (<see cref="ExactTiltResult"/>
    /// and its resampled samples) or, with <see cref="ExactTiltSettings.Block"/>, a shard's block of systems (no samples).
    /// </summary>
    internal static (ExactTiltResult? Exact, SmcBlock? Block, GenerationResult Samples) Smc(IDenoiser network, DataRange? range, Sampler sampler, BatchPotential potential,
                                                                                            float[] proposalTheta, ExactTiltSettings settings, GenerationRequest request,
                                                                                            IProgress<GenerationProgress>? progress, ISmcSystemStore? store)
    {
        var exactSettings = settings with
        {
            Count = request.Count,
            Smc = settings.Smc with { Seed = request.Seed, OnNonFinite = request.OnNonFinite },
        };
        if (exactSettings.Block is not null)
        {
            var ran = ExactTilt.RunBlock(network, range, sampler, potential, proposalTheta, exactSettings, BlockProgress(progress), request.Cancellation, store);
            return (null, ran, new GenerationResult([], 0, 0, ran.NetworkEvaluations, TimeSpan.Zero, ran.Time));
        }
        var exact = ExactTilt.SampleTarget(network, range, sampler, potential, proposalTheta, exactSettings, EssProgress(progress), request.Cancellation, store);
        return (exact, null, new GenerationResult(exact.Samples, 0, request.Count, exact.Particles.NetworkEvaluations, TimeSpan.Zero, exact.Time));
    }

    /// <summary>The mixture sampler <see cref="Run"/> uses for a convex low-rank reward in the fast mode (its batches are the request's).</summary>
    private static TiltMixtureSampler Mixture(IDenoiser network, DataRange? range, Sampler sampler, FeatureReward reward, double lambda,
                                              KlAlignmentSettings settings, GenerationRequest request) =>
        new(ExactTilt.BaseLaw(network, range), sampler, reward, lambda, new TiltMixtureSettings
        {
            BatchSize = request.BatchSize,
            Partition = settings.Partition with { SamplesPerNode = Math.Max(settings.Partition.SamplesPerNode, 32), BatchSize = request.BatchSize },
        });

    /// <summary>
    /// The KL mixture's set-up for <paramref name="request"/>'s seed (DESIGN §2: its terms' log Z and the pilot rounds that
    /// place them and measure ε), computed once — by a plan for all its shards (DESIGN §10) — and given back through
    /// <see cref="KlAlignmentSettings.Envelope"/>. The same as <see cref="Run"/> computes when it is given none.
    /// </summary>
    /// <exception cref="ConfigException">The reward is not one the mixture samples in the settings' mode (see <see cref="Choose"/>).</exception>
    public static MixtureEnvelope PrepareMixture(IDenoiser network, DataRange? range, Sampler sampler, Reward reward, double lambda,
                                                 KlAlignmentSettings settings, GenerationRequest request)
    {
        if (Choose(reward, lambda, settings.Mode) != KlAlgorithm.TiltMixture)
            throw ConfigException.For("reward", $"'{reward.Name}' in the {settings.Mode.ToString().ToLowerInvariant()} mode is not sampled by the KL mixture, which has the set-up");
        using var cancellation = NetworkCancellation.Enter(request.Cancellation);
        return Mixture(network, range, sampler, (FeatureReward)reward, lambda, settings.Validated(), request).Prepare(request.Seed);
    }

    /// <summary>The store an SMC run reads and fills: the given systems, else the checkpoint's (null for neither).</summary>
    internal static ISmcSystemStore? Store(BatchCheckpoint? checkpoint, ISmcSystemStore? systems) =>
        systems ?? (checkpoint is null ? null : new SmcCheckpoint(checkpoint));

    private static KlAlignmentResult RunMixture(IDenoiser network, DataRange? range, Sampler sampler, FeatureReward reward, double lambda,
                                                KlAlignmentSettings settings, GenerationRequest request, IProgress<GenerationProgress>? progress,
                                                BatchCheckpoint? checkpoint)
    {
        using var cancellation = NetworkCancellation.Enter(request.Cancellation);
        var mixture = Mixture(network, range, sampler, reward, lambda, settings, request);
        var envelope = settings.Envelope ?? (checkpoint?.ReadNote(MixtureNote) is { } saved
            ? MixtureEnvelope.FromJson(saved, Path.Combine(BatchCheckpoint.Folder, MixtureNote))
            : null);
        bool resumed = settings.Envelope is null && envelope is not null;
        if (envelope is null)
        {
            envelope = mixture.Prepare(request.Seed);
            checkpoint?.WriteNote(MixtureNote, envelope.ToJson());
        }
        // The one generation loop: the request's shard, batches, NaN policy and checkpoint (finished samples).
        var drawn = mixture.Sample(request with { Checkpoint = checkpoint ?? request.Checkpoint }, envelope, progress is null ? null : progress.Report);
        return new KlAlignmentResult(KlAlgorithm.TiltMixture, drawn.Generated, [])
        {
            Mixture = drawn, SetupEvaluations = settings.Envelope is null ? drawn.SetupEvaluations : 0, ResumedSetup = resumed,
        };
    }

    private static void CheckLambda(double lambda)
    {
        if (!(lambda > 0) || double.IsInfinity(lambda)) throw ConfigException.For("lambda", $"{lambda}: expected a finite value > 0");
    }

    /// <summary>A block's progress as systems finished of the block's (<see cref="ExactTiltProgress.MaxSystems"/> of a block run).</summary>
    private static InlineProgress<ExactTiltProgress>? BlockProgress(IProgress<GenerationProgress>? progress) => progress is null ? null
        : new InlineProgress<ExactTiltProgress>(p => progress.Report(new GenerationProgress(p.Systems, p.MaxSystems, p.Systems, p.MaxSystems)));

    /// <summary>
    /// The SMC's progress as samples: effective samples reached of the target, which the budget caps (ESS ≤ particles),
    /// and the fraction done (<see cref="ExactTiltProgress.Fraction"/>) in thousandths as its steps.
    /// </summary>
    internal static InlineProgress<ExactTiltProgress>? EssProgress(IProgress<GenerationProgress>? progress) => progress is null ? null : new InlineProgress<ExactTiltProgress>(p =>
    {
        double reachable = p.Particles <= 0 || p.Systems <= 0 ? p.TargetEffectiveSampleSize
            : Math.Min(p.TargetEffectiveSampleSize, (double)p.Particles / p.Systems * p.MaxSystems);
        int total = (int)Math.Ceiling(Math.Max(reachable, 1));
        progress.Report(new GenerationProgress((int)Math.Min(Math.Floor(p.EffectiveSampleSize), total), total, (long)Math.Round(1000 * p.Fraction), 1000));
    });
}
