using System.Text.Json;
using System.Text.Json.Serialization;
using OnnxAlign.Core;
using OnnxAlign.Estimation;
using OnnxAlign.Guidance;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment;

/// <summary>How <see cref="TiltMixtureSampler"/> builds and checks its envelope.</summary>
public sealed record TiltMixtureSettings
{
    /// <summary>Largest number of tangent planes (general convex f).</summary>
    public int MaxTangents { get; init; } = 12;

    /// <summary>Proposal samples per refinement round, used to measure the envelope gap and the acceptance rate.</summary>
    public int PilotSamples { get; init; } = 256;

    /// <summary>Keep refining while the measured acceptance rate improves by at least this fraction.</summary>
    public double MinImprovement { get; init; } = 0.05;

    /// <summary>Added to the largest gap seen in the pilot: ε = max gap + margin (room for gaps the pilot missed).</summary>
    public double EpsilonMargin { get; init; } = 0.05;

    /// <summary>Gauss–Hermite nodes per direction of the Hubbard–Stratonovich integral.</summary>
    public int GaussHermiteNodes { get; init; } = 8;

    /// <summary>Hubbard–Stratonovich terms whose estimated share of the proposal is below this are dropped before log Z is estimated.</summary>
    public double PruneShare { get; init; } = 1e-5;

    /// <summary>Samples per network call.</summary>
    public int BatchSize { get; init; } = 256;

    /// <summary>A sample rejected this many times in a row stops the run (an envelope this far from the target is a fault, not a run to wait for).</summary>
    public int MaxProposalsPerSample { get; init; } = 100_000;

    /// <summary>log Z estimation (its seed is offset from the run's seed).</summary>
    public LogPartitionSettings Partition { get; init; } = new();
}

/// <summary>Which exact construction samples the KL-aligned law (DESIGN §2).</summary>
public enum MixtureMethod
{
    /// <summary>f = λ·log Σ exp(z/λ): q is exactly the mixture of the tilts; no rejection.</summary>
    ExactMixture,

    /// <summary>PSD quadratic f: Hubbard–Stratonovich, e^{½zᵀMz} = E_{u∼N(0,M)} e^{⟨u,z⟩}, the u-integral by Gauss–Hermite (an underestimate, so a final accept/reject with acceptance ≈ 1 keeps it exact).</summary>
    HubbardStratonovich,

    /// <summary>Convex f, k ≤ 3: adaptive tangent planes, mixture of their tilts, accept/reject.</summary>
    TangentMixture,
}

/// <summary>One term e^{b + ⟨u, z⟩} of the envelope and its tilt's share of the proposal.</summary>
/// <param name="U">u: the tilt of the features (θ = Aᵀu).</param>
/// <param name="Intercept">b.</param>
/// <param name="LogPartition">L(u) = log E_p e^{⟨u, z⟩} with its standard error.</param>
/// <param name="Weight">w ∝ e^{b + L(u)}, normalised.</param>
public sealed record MixtureComponent(double[] U, double Intercept, Estimate LogPartition, double Weight);

/// <summary>A refinement round: tangents used, ε measured and the acceptance rate it gives.</summary>
public sealed record RefinementRound(int Terms, double Epsilon, double Acceptance);

/// <summary>
/// What a mixture run's set-up computes once, before any proposal (DESIGN §2): the proposal's components with their
/// log partitions and weights, and the ε of the acceptance test. Saved with an interrupted run so that a resumed run
/// draws exactly the same proposals without repeating the set-up.
/// </summary>
/// <param name="Method">The construction it belongs to.</param>
/// <param name="Components">The terms ℓ_j(z) = b_j + ⟨u_j, z⟩ with L(u_j) and the mixture weights.</param>
/// <param name="Epsilon">ε of the acceptance test (0 for the exact mixture).</param>
/// <param name="Refinement">The pilot rounds that chose the terms.</param>
/// <param name="SetupEvaluations">Network evaluations the set-up took.</param>
public sealed record MixtureEnvelope(MixtureMethod Method, IReadOnlyList<MixtureComponent> Components, double Epsilon,
                                     IReadOnlyList<RefinementRound> Refinement, long SetupEvaluations)
{
    private static readonly JsonSerializerOptions Json = new()
    {
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals, // a standard error may be NaN
        Converters = { new JsonStringEnumConverter() },
        WriteIndented = true,
    };

    /// <summary>The envelope as JSON; doubles are written in their shortest round-trip form, so reading it back is exact.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>Reads <see cref="ToJson"/>'s output.</summary>
    /// <exception cref="ConfigException">The text is not a saved envelope.</exception>
    public static MixtureEnvelope FromJson(string json, string source)
    {
        try
        {
            var envelope = JsonSerializer.Deserialize<MixtureEnvelope>(json, Json);
            if (envelope?.Components is not { Count: > 0 } components || components.Any(c => c?.U is null) || envelope.Refinement is null)
                throw new ConfigException($"{source}: not a saved mixture envelope");
            return envelope;
        }
        catch (JsonException e)
        {
            throw new ConfigException($"{source}: not a saved mixture envelope ({e.Message})", e);
        }
    }
}

/// <summary>Accepted samples of the KL-aligned law and what they cost.</summary>
public sealed class TiltMixtureResult
{
    internal TiltMixtureResult(MixtureMethod method, GenerationResult generated, double[][] features, IReadOnlyList<MixtureComponent> components,
                               double epsilon, long proposed, long violations, long setupEvaluations, IReadOnlyList<RefinementRound> rounds)
    {
        (Method, Generated, Features, Components, Epsilon, Proposed, EnvelopeViolations, SetupEvaluations, Refinement) =
            (method, generated, features, components, epsilon, proposed, violations, setupEvaluations, rounds);
    }

    /// <summary>The construction used.</summary>
    public MixtureMethod Method { get; }

    /// <summary>The accepted samples as the generation loop returns them: sample i of the run is the first accepted proposal of stream (seed, i), with its run index.</summary>
    public GenerationResult Generated { get; }

    /// <summary>The accepted samples, one after another, in run-index order.</summary>
    public float[] Samples => Generated.Samples;

    /// <summary>z = Ax + c of each accepted sample.</summary>
    public double[][] Features { get; }

    /// <summary>Accepted samples.</summary>
    public int Count => Features.Length;

    /// <summary>Run indices of samples dropped because a proposal of theirs turned NaN or ±∞ (<see cref="NonFinitePolicy.Skip"/>).</summary>
    public IReadOnlyList<int> Skipped => Generated.Skipped;

    /// <summary>The mixture's terms.</summary>
    public IReadOnlyList<MixtureComponent> Components { get; }

    /// <summary>ε of the acceptance test exp(g − ε)/Σ e^{ℓ_j} (0 for the exact mixture).</summary>
    public double Epsilon { get; }

    /// <summary>Proposals drawn to get <see cref="Count"/> accepted samples (those of batches read from a checkpoint included).</summary>
    public long Proposed { get; }

    /// <summary>Accepted / proposed.</summary>
    public double AcceptanceRate => Proposed == 0 ? 0 : (double)Count / Proposed;

    /// <summary>Proposals where g exceeded the envelope by more than ε (accepted with probability 1; the law there is slightly too light).</summary>
    public long EnvelopeViolations { get; }

    /// <summary>Network evaluations spent on log Z and the pilot rounds (by whoever prepared the envelope).</summary>
    public long SetupEvaluations { get; }

    /// <summary>Network evaluations spent on the proposals in this run (batches read from a checkpoint cost none).</summary>
    public long SamplingEvaluations => Generated.NetworkEvaluations;

    /// <summary>All network evaluations.</summary>
    public long NetworkEvaluations => SetupEvaluations + SamplingEvaluations;

    /// <summary>Network evaluations per accepted sample, set-up included.</summary>
    public double EvaluationsPerAccepted => Count == 0 ? double.PositiveInfinity : (double)NetworkEvaluations / Count;

    /// <summary>The refinement rounds (tangent mixtures; one round for Hubbard–Stratonovich).</summary>
    public IReadOnlyList<RefinementRound> Refinement { get; }
}

/// <summary>
/// Samples q ∝ p·exp(f(Ax + c)/λ) for convex f of k ≤ 3 features through linear tilts (DESIGN §2). With g = f/λ and
/// an envelope of terms e^{ℓ_j(z)}, ℓ_j(z) = b_j + ⟨u_j, z⟩, that minorises e^g, the proposal p·Σ_j e^{ℓ_j} is the
/// mixture Σ_j w_j q_{u_j} with w_j ∝ e^{b_j + L(u_j)} (each q_{u_j} sampled exactly by <see cref="LinearTilt"/>, L from
/// <see cref="FeatureLogPartition"/>), and x is accepted with probability exp(g(z) − ε)/Σ_j e^{ℓ_j(z)}. The terms are
/// tangent planes ℓ_j(z) = g(z_j) + ⟨∇g(z_j), z − z_j⟩ placed adaptively where q has mass, the Gauss–Hermite nodes of the
/// Hubbard–Stratonovich integral for PSD quadratics, or the exact components of a log-sum-exp at temperature λ.
/// </summary>
public sealed class TiltMixtureSampler
{
    private readonly IDenoiser _denoiser;
    private readonly Sampler _sampler;
    private readonly FeatureReward _reward;
    private readonly double _lambda;

    /// <summary>A sampler of q ∝ p·exp(r/λ) for r = <paramref name="reward"/>.</summary>
    /// <exception cref="ArgumentException">The reward's structure is not one this sampler handles (see <see cref="Supports"/>).</exception>
    public TiltMixtureSampler(IDenoiser denoiser, Sampler sampler, FeatureReward reward, double lambda, TiltMixtureSettings? settings = null)
    {
        if (!(lambda > 0) || !double.IsFinite(lambda)) throw new ArgumentException($"λ must be a positive finite number, got {lambda}");
        Method = Supports(reward, lambda, out string? why) ?? throw new ArgumentException(why);
        (_denoiser, _sampler, _reward, _lambda, Settings) = (denoiser, sampler, reward, lambda, settings ?? new TiltMixtureSettings());
    }

    /// <summary>The construction chosen from the reward's structure.</summary>
    public MixtureMethod Method { get; }

    /// <summary>The settings.</summary>
    public TiltMixtureSettings Settings { get; }

    /// <summary>What the KL mixture can sample, for errors.</summary>
    public const string Supported = "log-sum-exp rewards at temperature λ (exact mixture, any k), PSD quadratics (Hubbard–Stratonovich) " +
                                    "and other convex f (tangent mixture + rejection), both with k ≤ 3 features";

    /// <summary>The method for a reward and λ, or null with the reason in <paramref name="why"/>.</summary>
    public static MixtureMethod? Supports(FeatureReward reward, double lambda, out string? why)
    {
        why = null;
        var f = reward.Function;
        if (f is FeatureFunction.LogSumExp lse && Math.Abs(lse.Temperature - lambda) <= 1e-12 * lambda) return MixtureMethod.ExactMixture;
        if (f.Curvature != Curvature.Convex)
            why = $"f = {f.Name} is {(f.Curvature == Curvature.Concave ? "concave" : "neither convex nor concave")}; KL alignment supports {Supported}";
        else if (reward.FeatureCount > 3)
            why = $"f = {f.Name} has k = {reward.FeatureCount} features; the tangent mixture needs k ≤ 3 (its size grows exponentially in k)" +
                  (f is FeatureFunction.LogSumExp ? $", or a log-sum-exp whose temperature equals λ ({lambda})" : "");
        else return f is FeatureFunction.Quadratic ? MixtureMethod.HubbardStratonovich : MixtureMethod.TangentMixture;
        return null;
    }

    /// <summary>g(z) = f(z)/λ and its (sub)gradient.</summary>
    private double G(ReadOnlySpan<double> z, Span<double> gradient)
    {
        double value = _reward.Function.Gradient(z, gradient) / _lambda;
        for (int j = 0; j < gradient.Length; j++) gradient[j] /= _lambda;
        return value;
    }

    private double G(ReadOnlySpan<double> z) => _reward.Function.Value(z) / _lambda;

    /// <summary>
    /// The set-up of a run with this seed: log Z of the terms and, for the envelopes with rejection, the pilot rounds
    /// that place the terms and measure ε. <see cref="Sample(GenerationRequest, MixtureEnvelope?, Action{GenerationProgress}?)"/> calls it when it is given no envelope.
    /// </summary>
    /// <param name="seed">The run's noise seed; the pilot rounds and log Z use offset seeds, independent of the proposals.</param>
    public MixtureEnvelope Prepare(long seed)
    {
        var partition = new FeatureLogPartition(_denoiser, _sampler, _reward, Settings.Partition with { Seed = seed + 3_000_000_019L });
        var metered = new MeteredDenoiser(_denoiser);
        var (terms, epsilon, rounds) = BuildEnvelope(partition, metered, seed);
        var components = Components(partition, terms);
        return new MixtureEnvelope(Method, components, epsilon, rounds, partition.NetworkEvaluations + metered.Evaluations);
    }

    /// <summary>Draws <paramref name="count"/> accepted samples; sample i draws its proposals from noise stream (seed, i).</summary>
    /// <param name="count">Accepted samples wanted.</param>
    /// <param name="seed">Noise seed. The pilot rounds and log Z use offset seeds, so they are independent of the proposals.</param>
    /// <param name="envelope">The set-up of this seed from <see cref="Prepare"/>; null computes it.</param>
    /// <param name="onNonFinite">A sample whose proposal turns NaN or ±∞: stop, or drop the sample and go on.</param>
    public TiltMixtureResult Sample(int count, long seed, MixtureEnvelope? envelope = null, NonFinitePolicy onNonFinite = NonFinitePolicy.Stop) =>
        Sample(new GenerationRequest { Count = count, BatchSize = Settings.BatchSize, Seed = seed, OnNonFinite = onNonFinite }, envelope);

    /// <summary>
    /// Samples the request's shard of q by per-sample rejection (DESIGN §2, §10): sample i draws proposals from its own
    /// noise stream (seed, i) — each proposal its x_T, then its component and acceptance uniform, then the sampler's
    /// noise — until one is accepted. Sample i therefore depends only on the envelope, the seed and i: not on the
    /// batch, the shard or the machine, so shards of one plan merge to the single run. The request's batches, NaN
    /// policy (a proposal that turns NaN/±∞ stops the run or drops its sample), checkpoint (finished batches and their
    /// proposal counts: a resumed run equals an uninterrupted one) and cancellation are the generation loop's.
    /// </summary>
    /// <param name="request">Count, shard, batch (samples per batch; proposals go to the network in batches of
    /// <see cref="TiltMixtureSettings.BatchSize"/> per component), seed, NaN policy, checkpoint, cancellation.</param>
    /// <param name="envelope">The set-up of this seed from <see cref="Prepare"/> (a plan's, or one saved by an interrupted run); null computes it.</param>
    /// <param name="progress">Samples accepted (or dropped) of the shard, after each batch.</param>
    /// <exception cref="NonFiniteException">A proposal turned NaN or ±∞ and the policy is <see cref="NonFinitePolicy.Stop"/>.</exception>
    /// <exception cref="InvalidOperationException">A sample was rejected <see cref="TiltMixtureSettings.MaxProposalsPerSample"/> times.</exception>
    public TiltMixtureResult Sample(GenerationRequest request, MixtureEnvelope? envelope = null, Action<GenerationProgress>? progress = null)
    {
        if (request.Count < 1) throw new ArgumentOutOfRangeException(nameof(request), "count must be ≥ 1");
        if (request.InitialNoise is not null)
            throw ConfigException.For("GenerationRequest.InitialNoise", ": the KL mixture draws a new x_T for every proposal, so it takes no initial noise");
        envelope ??= Prepare(request.Seed);
        if (envelope.Method != Method || envelope.Components.Any(c => c.U.Length != _reward.FeatureCount))
            throw new ArgumentException($"the envelope was prepared for another reward ({envelope.Method}, {envelope.Components[0].U.Length} features)");
        var terms = envelope.Components.Select(c => (c.U, B: c.Intercept)).ToList();
        var proposals = new Proposals(this, envelope.Components, terms, envelope.Epsilon);
        var generated = Generation.Run(_denoiser, _sampler, request, progress, null, proposals);
        return new TiltMixtureResult(Method, generated, _reward.ProjectBatch(generated.Samples), envelope.Components, envelope.Epsilon,
                                     proposals.Proposed, proposals.Violations, envelope.SetupEvaluations, envelope.Refinement);
    }

    /// <summary>log of exp(g(z) − ε)/Σ_j e^{ℓ_j(z)}: ≤ 0 where the envelope holds.</summary>
    private double LogAcceptance(double[] z, IReadOnlyList<(double[] U, double B)> terms, double epsilon) =>
        G(z) - epsilon - Numerics.LogSumExp(terms.Select(t => t.B + FeatureLogPartition.Dot(t.U, z)).ToArray());

    private (List<(double[] U, double B)> Terms, double Epsilon, List<RefinementRound> Rounds) BuildEnvelope(
        FeatureLogPartition partition, MeteredDenoiser metered, long seed)
    {
        int k = _reward.FeatureCount;
        var rounds = new List<RefinementRound>();
        if (Method == MixtureMethod.ExactMixture)
        {
            // e^{g(z)} = Σ_c e^{z_c/λ}: the terms are the components, the envelope is an identity (ε = 0).
            double t = ((FeatureFunction.LogSumExp)_reward.Function).Temperature;
            var exact = Enumerable.Range(0, k).Select(c => (U: Enumerable.Range(0, k).Select(j => j == c ? 1 / t : 0.0).ToArray(), B: 0.0)).ToList();
            return (exact, 0, rounds);
        }

        // Base statistics of z start the construction (DESIGN §2: where Ax lives).
        var (_, baseZ) = partition.TiltedBatch(new double[k], Settings.PilotSamples);
        var baseMean = Enumerable.Range(0, k).Select(j => baseZ.Average(z => z[j])).ToArray();

        if (Method == MixtureMethod.HubbardStratonovich)
        {
            var terms = HubbardStratonovichTerms((FeatureFunction.Quadratic)_reward.Function, baseZ);
            var (eps, acceptance) = Pilot(partition, metered, terms, seed, 0);
            rounds.Add(new RefinementRound(terms.Count, eps, acceptance));
            return (terms, eps, rounds);
        }

        // Tangent mixture: start from the base statistics of z - its mean and mean ± 2 sd along each feature, so that every
        // piece of a piecewise-linear f the base law reaches is represented - and two mean-field steps z ← E_{q_{∇g(z)}}[z]
        // toward q's mass. The pilot rounds then add a tangent where the measured gap is largest.
        var points = new List<double[]> { baseMean };
        for (int step = 0; step < 2; step++)
        {
            var grad = new double[k];
            G(points[^1], grad);
            points.Add(partition.At(grad).MeanFeatures);
        }
        for (int j = 0; j < k; j++)
        {
            double sd = Math.Sqrt(baseZ.Sum(z => (z[j] - baseMean[j]) * (z[j] - baseMean[j])) / (baseZ.Length - 1));
            foreach (int sign in new[] { -1, 1 })
            {
                var point = (double[])baseMean.Clone();
                point[j] += 2 * sign * sd;
                points.Add(point);
            }
        }
        points = points.Take(Settings.MaxTangents).ToList();
        var current = Tangents(points);
        var (bestEps, bestAcceptance) = Pilot(partition, metered, current, seed, 0, out var worst);
        rounds.Add(new RefinementRound(current.Count, bestEps, bestAcceptance));
        var best = current;
        for (int round = 1; points.Count < Settings.MaxTangents; round++)
        {
            points.Add(worst);
            current = Tangents(points);
            var (eps, acceptance) = Pilot(partition, metered, current, seed, round, out worst);
            rounds.Add(new RefinementRound(current.Count, eps, acceptance));
            if (acceptance > bestAcceptance) (best, bestEps) = (current, eps);
            if (acceptance < bestAcceptance * (1 + Settings.MinImprovement)) break;
            bestAcceptance = Math.Max(bestAcceptance, acceptance);
        }
        return (best, bestEps, rounds);
    }

    /// <summary>Tangent planes of g at the points, one per distinct gradient (a piecewise-linear f repeats them).</summary>
    private List<(double[] U, double B)> Tangents(IEnumerable<double[]> points)
    {
        var terms = new List<(double[] U, double B)>();
        foreach (var z in points)
        {
            var u = new double[z.Length];
            double b = G(z, u) - FeatureLogPartition.Dot(u, z);
            int same = terms.FindIndex(t => t.U.SequenceEqual(u));
            if (same < 0) terms.Add((u, b));
            else if (b > terms[same].B) terms[same] = (u, b);
        }
        return terms;
    }

    /// <summary>
    /// g = ½zᵀ(M/λ)z + (h/λ)ᵀz + c/λ with M/λ = Σ_i s_i² v_i v_iᵀ: e^g = e^{c/λ} E_ξ exp⟨h/λ + Σ s_i ξ_i v_i, z⟩, ξ ~ N(0, I)
    /// (Hubbard–Stratonovich), by tensor Gauss–Hermite nodes. The quadrature error of each factor E e^{aξ} is
    /// (n!/(2n)!)·a^{2n}e^{aη} &gt; 0, so the terms minorise e^g like tangent planes do.
    /// </summary>
    private List<(double[] U, double B)> HubbardStratonovichTerms(FeatureFunction.Quadratic f, double[][] baseZ)
    {
        int k = _reward.FeatureCount;
        var (values, vectors) = Numerics.SymmetricEigen(f.Matrix.ToArray().Select(v => v / _lambda).ToArray(), k);
        double largest = values.Max();
        var directions = Enumerable.Range(0, k).Where(i => values[i] > 1e-12 * largest).ToArray();
        var (nodes, weights) = Numerics.GaussHermite(Settings.GaussHermiteNodes);
        var terms = new List<(double[] U, double B)>();
        var index = new int[directions.Length];
        while (true)
        {
            var u = f.Linear.ToArray().Select(v => v / _lambda).ToArray();
            double b = f.Constant / _lambda;
            for (int d = 0; d < directions.Length; d++)
            {
                int i = directions[d];
                double step = Math.Sqrt(values[i]) * nodes[index[d]];
                for (int j = 0; j < k; j++) u[j] += step * vectors[j * k + i];
                b += Math.Log(weights[index[d]]);
            }
            terms.Add((u, b));
            int carry = 0;
            while (carry < index.Length && ++index[carry] == nodes.Length) index[carry++] = 0;
            if (carry == index.Length) break;
        }
        // Prune by the plug-in estimate L(u) ≈ log mean_i e^{⟨u, z_i⟩} over the base pilot (no network calls; it sees the
        // base law's modes, unlike a Gaussian fit): only terms with a real share of the proposal need log Z.
        var approximate = terms.Select(t => t.B + Numerics.LogSumExp(baseZ.Select(z => FeatureLogPartition.Dot(t.U, z)).ToArray()) - Math.Log(baseZ.Length)).ToArray();
        double total = Numerics.LogSumExp(approximate);
        return terms.Where((_, i) => approximate[i] - total > Math.Log(Settings.PruneShare)).ToList();
    }

    private List<MixtureComponent> Components(FeatureLogPartition partition, IReadOnlyList<(double[] U, double B)> terms)
    {
        var stats = terms.Select(t => partition.At(t.U)).ToArray();
        var logWeights = terms.Select((t, j) => t.B + stats[j].LogPartition.Value).ToArray();
        var weights = Numerics.Softmax(logWeights);
        return terms.Select((t, j) => new MixtureComponent(t.U, t.B, stats[j].LogPartition, weights[j])).ToList();
    }

    private (double Epsilon, double Acceptance) Pilot(FeatureLogPartition partition, MeteredDenoiser metered,
                                                      List<(double[] U, double B)> terms, long seed, int round) =>
        Pilot(partition, metered, terms, seed, round, out _);

    /// <summary>
    /// Draws a pilot batch from the proposal of <paramref name="terms"/> and measures the gap d = g − log Σ e^{ℓ_j}:
    /// ε = max d + margin, the acceptance rate mean(e^{d − ε}), and the z where the gap is largest (the next tangent point).
    /// </summary>
    private (double Epsilon, double Acceptance) Pilot(FeatureLogPartition partition, MeteredDenoiser metered,
                                                      List<(double[] U, double B)> terms, long seed, int round, out double[] worst)
    {
        var components = Components(partition, terms);
        // One proposal per pilot sample, no acceptance test; a proposal that turns NaN/±∞ is left out of the measurement.
        var pilot = Generation.Run(metered, _sampler, new GenerationRequest
        {
            Count = Settings.PilotSamples, BatchSize = Settings.BatchSize, Seed = seed + 1_000_000_007L * (round + 1), OnNonFinite = NonFinitePolicy.Skip,
        }, null, null, new Proposals(this, components, terms: null, epsilon: 0));
        if (pilot.Count == 0) throw new InvalidOperationException($"all {Settings.PilotSamples} pilot proposals of the KL mixture turned NaN/±∞");
        var features = _reward.ProjectBatch(pilot.Samples);
        var gaps = features.Select(z => LogAcceptance(z, terms, 0)).ToArray();
        int argmax = Array.IndexOf(gaps, gaps.Max());
        worst = features[argmax];
        double epsilon = gaps[argmax] + Settings.EpsilonMargin;
        return (epsilon, gaps.Average(d => Math.Exp(Math.Min(0, d - epsilon))));
    }

    /// <summary>
    /// The mixture's proposals for a batch of samples (an <see cref="IBatchProcedure"/> of the generation loop). Each
    /// round, every pending sample draws its component (by the weights) and acceptance uniform from its stream, the
    /// pending samples are sampled under their components' tilts in groups, and those accepted leave; the rest draw a new
    /// x_T from their streams and go again. Without <c>terms</c> (the pilot) every row makes one proposal and no test.
    /// </summary>
    private sealed class Proposals(TiltMixtureSampler owner, IReadOnlyList<MixtureComponent> components,
                                   IReadOnlyList<(double[] U, double B)>? terms, double epsilon) : IBatchProcedure
    {
        private readonly double[] _cumulative = Cumulative(components);
        private long _batchProposed, _batchViolations;

        /// <summary>Proposals drawn so far (of restored batches too).</summary>
        public long Proposed { get; private set; }

        /// <summary>Proposals above the envelope so far.</summary>
        public long Violations { get; private set; }

        private static double[] Cumulative(IReadOnlyList<MixtureComponent> components)
        {
            var cumulative = new double[components.Count];
            double sum = 0;
            for (int j = 0; j < components.Count; j++) cumulative[j] = sum += components[j].Weight;
            return cumulative;
        }

        public void Run(BatchRows batch)
        {
            var settings = owner.Settings;
            bool exact = owner.Method == MixtureMethod.ExactMixture;
            var tilts = new LinearTilt?[components.Count];
            var chosen = new int[batch.Count];
            var uniforms = new double[batch.Count];
            var z = new double[owner._reward.FeatureCount];
            var pending = Enumerable.Range(0, batch.Count).Where(r => !batch.IsSkipped(r)).ToList();
            long proposed = 0, violations = 0;
            for (int attempt = 0; pending.Count > 0; attempt++)
            {
                if (attempt == settings.MaxProposalsPerSample)
                    throw new InvalidOperationException($"sample {batch.FirstIndex + pending[0]} of the KL mixture was rejected {attempt} times in a row " +
                                                        $"({proposed} proposals for {batch.Count} samples of this batch): the envelope (ε = {epsilon:G4}) is far from the target");
                foreach (int r in pending)
                {
                    var stream = batch.Streams[r];
                    if (attempt > 0) stream.NextGaussian(batch.Row(r));   // a new x_T; the first proposal's was drawn by the loop
                    double pick = stream.NextDouble() * _cumulative[^1];
                    int component = Array.FindIndex(_cumulative, c => pick < c);
                    chosen[r] = component < 0 ? components.Count - 1 : component;   // pick = sum only by rounding
                    uniforms[r] = 1 - stream.NextDouble();   // in (0, 1]
                }
                for (int j = 0; j < components.Count; j++)
                {
                    var members = pending.Where(r => chosen[r] == j).ToArray();
                    if (members.Length == 0) continue;
                    tilts[j] ??= new LinearTilt(batch.Denoiser, owner._reward.Transposed(components[j].U));
                    for (int offset = 0; offset < members.Length; offset += settings.BatchSize)
                        batch.Sample(tilts[j]!, members[offset..Math.Min(members.Length, offset + settings.BatchSize)]);
                }
                proposed += pending.Count;
                if (terms is null) break;
                var rejected = new List<int>();
                foreach (int r in pending)
                {
                    if (batch.IsSkipped(r)) continue;   // turned NaN/±∞ under the skip policy: dropped with its sample
                    owner._reward.Project(batch.Row(r), z);
                    double logRatio = owner.LogAcceptance(z, terms, epsilon);
                    if (logRatio > (exact ? 1e-9 : 0)) violations++;
                    if (!exact && !(Math.Log(uniforms[r]) < logRatio)) rejected.Add(r);
                }
                pending = rejected;
            }
            (_batchProposed, _batchViolations) = (proposed, violations);
            Proposed += proposed;
            Violations += violations;
        }

        public bool Restore(IBatchStore store, int firstIndex, int count)
        {
            if (store.ReadNote(NoteName(firstIndex)) is not { } text) return false;
            try
            {
                var note = JsonSerializer.Deserialize<BatchNote>(text);
                if (note is null || note.Count != count) return false;
                Proposed += note.Proposed;
                Violations += note.Violations;
                return true;
            }
            catch (JsonException) { return false; }   // a damaged note: the batch is sampled again
        }

        public void Save(IBatchStore store, int firstIndex, int count) =>
            store.WriteNote(NoteName(firstIndex), JsonSerializer.Serialize(new BatchNote(count, _batchProposed, _batchViolations)));

        private static string NoteName(int firstIndex) => $"mixture_batch_{firstIndex:D9}.json";
    }

    /// <summary>What a finished batch of the mixture records beside its samples: its size, the proposals it drew and those above the envelope.</summary>
    private sealed record BatchNote(int Count, long Proposed, long Violations);
}
