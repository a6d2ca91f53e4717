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
    internal TiltMixtureResult(MixtureMethod method, float[] samples, double[][] features, IReadOnlyList<MixtureComponent> components,
                               double epsilon, long proposed, long violations, long setupEvaluations, long samplingEvaluations,
                               IReadOnlyList<RefinementRound> rounds, IReadOnlyList<long> nonFinite)
    {
        (Method, Samples, Features, Components, Epsilon, Proposed, EnvelopeViolations, SetupEvaluations, SamplingEvaluations, Refinement, NonFiniteProposals) =
            (method, samples, features, components, epsilon, proposed, violations, setupEvaluations, samplingEvaluations, rounds, nonFinite);
    }

    /// <summary>Indices of proposals dropped because they turned NaN or ±∞ (<see cref="NonFinitePolicy.Skip"/>).</summary>
    public IReadOnlyList<long> NonFiniteProposals { get; }

    /// <summary>The construction used.</summary>
    public MixtureMethod Method { get; }

    /// <summary>The accepted samples, one after another, in proposal order.</summary>
    public float[] Samples { get; }

    /// <summary>z = Ax + c of each accepted sample.</summary>
    public double[][] Features { get; }

    /// <summary>Accepted samples.</summary>
    public int Count => Features.Length;

    /// <summary>The mixture's terms.</summary>
    public IReadOnlyList<MixtureComponent> Components { get; }

    /// <summary>ε of the acceptance test exp(g − ε)/Σ e^{ℓ_j} (0 for the exact mixture).</summary>
    public double Epsilon { get; }

    /// <summary>Proposals drawn to get <see cref="Count"/> accepted samples.</summary>
    public long Proposed { get; }

    /// <summary>Accepted / proposed.</summary>
    public double AcceptanceRate => Proposed == 0 ? 0 : (double)Count / Proposed;

    /// <summary>Proposals where g exceeded the envelope by more than ε (accepted with probability 1; the law there is slightly too light).</summary>
    public long EnvelopeViolations { get; }

    /// <summary>Network evaluations spent on log Z and the pilot rounds.</summary>
    public long SetupEvaluations { get; }

    /// <summary>Network evaluations spent on the proposals.</summary>
    public long SamplingEvaluations { get; }

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
    /// that place the terms and measure ε. <see cref="Sample"/> calls it when it is given no envelope.
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

    /// <summary>Draws <paramref name="count"/> accepted samples; proposal i uses noise stream (seed, i).</summary>
    /// <param name="count">Accepted samples wanted.</param>
    /// <param name="seed">Noise seed. The pilot rounds and log Z use offset seeds, so they are independent of the proposals.</param>
    /// <param name="progress">Called with (accepted, proposed) after each batch of proposals.</param>
    /// <param name="maxProposals">Gives up (with an exception naming the acceptance rate) after this many proposals.</param>
    /// <param name="envelope">The set-up of this seed from <see cref="Prepare"/> (e.g. saved by an interrupted run); null computes it.</param>
    /// <param name="proposals">Where finished batches of proposals are kept, keyed by their first proposal index, so that an
    /// interrupted run continues with the same proposals and hence the same accepted samples; null keeps none.</param>
    /// <param name="onNonFinite">A proposal that turned NaN or ±∞ (checked before its acceptance test): stop with a
    /// <see cref="NonFiniteException"/> that keeps the samples accepted before it, or drop it and go on.</param>
    /// <exception cref="NonFiniteException">A proposal turned NaN or ±∞ and the policy is <see cref="NonFinitePolicy.Stop"/>.</exception>
    public TiltMixtureResult Sample(int count, long seed, Action<int, long>? progress = null, long maxProposals = 10_000_000,
                                    MixtureEnvelope? envelope = null, IBatchStore? proposals = null,
                                    NonFinitePolicy onNonFinite = NonFinitePolicy.Stop)
    {
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), "count must be ≥ 1");
        envelope ??= Prepare(seed);
        if (envelope.Method != Method || envelope.Components.Any(c => c.U.Length != _reward.FeatureCount))
            throw new ArgumentException($"the envelope was prepared for another reward ({envelope.Method}, {envelope.Components[0].U.Length} features)");
        var components = envelope.Components;
        var terms = components.Select(c => (c.U, B: c.Intercept)).ToList();
        double epsilon = envelope.Epsilon;

        var samplingMeter = new MeteredDenoiser(_denoiser);
        var accepted = new List<(float[] X, double[] Z)>();
        var nonFinite = new List<long>();
        long proposed = 0, violations = 0;
        int size = _denoiser.SampleSize;
        float[] Stack(int n) // the first n accepted samples, one after another
        {
            var rows = new float[(long)n * size];
            for (int a = 0; a < n; a++) accepted[a].X.CopyTo(rows, (long)a * size);
            return rows;
        }
        int chunk = Math.Max(Settings.BatchSize, 64);
        while (accepted.Count < count)
        {
            if (proposed >= maxProposals)
                throw new InvalidOperationException($"the KL mixture accepted {accepted.Count} of {proposed} proposals; giving up at {maxProposals}");
            var draw = Draw(samplingMeter, components, seed, proposed, chunk, proposals);
            for (int i = 0; i < chunk && accepted.Count < count; i++, proposed++)
            {
                if (!Generation.AllFinite(draw.Samples.AsSpan(i * size, size)))
                {
                    if (onNonFinite == NonFinitePolicy.Skip) { nonFinite.Add(proposed); continue; }
                    throw new NonFiniteException(_sampler.Steps, checked((int)proposed),
                        new GenerationResult(Stack(accepted.Count), 0, accepted.Count, samplingMeter.Evaluations, TimeSpan.Zero, TimeSpan.Zero));
                }
                double logRatio = LogAcceptance(draw.Features[i], terms, epsilon);
                if (logRatio > (Method == MixtureMethod.ExactMixture ? 1e-9 : 0)) violations++;
                if (Method == MixtureMethod.ExactMixture || Math.Log(draw.Uniforms[i]) < logRatio)
                    accepted.Add((draw.Samples.AsSpan(i * size, size).ToArray(), draw.Features[i]));
            }
            progress?.Invoke(accepted.Count, proposed);
        }
        return new TiltMixtureResult(Method, Stack(count), accepted.Select(a => a.Z).ToArray(), components, epsilon, proposed, violations,
                                     envelope.SetupEvaluations, samplingMeter.Evaluations, envelope.Refinement, nonFinite);
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
        var draw = Draw(metered, components, seed + 1_000_000_007L * (round + 1), 0, Settings.PilotSamples);
        var gaps = draw.Features.Select(z => LogAcceptance(z, terms, 0)).ToArray();
        int argmax = Array.IndexOf(gaps, gaps.Max());
        worst = draw.Features[argmax];
        double epsilon = gaps[argmax] + Settings.EpsilonMargin;
        return (epsilon, gaps.Average(d => Math.Exp(Math.Min(0, d - epsilon))));
    }

    /// <summary>
    /// Proposals start..start+n−1 of the mixture: proposal i draws its component and its acceptance uniform from noise
    /// stream (seed, i), then its x_T and sampler noise from the same stream, so the result does not depend on batching.
    /// A batch found in <paramref name="store"/> is read instead of sampled (its components and uniforms are still drawn).
    /// </summary>
    private (float[] Samples, double[][] Features, double[] Uniforms) Draw(IDenoiser denoiser, IReadOnlyList<MixtureComponent> components,
                                                                          long seed, long start, int n, IBatchStore? store = null)
    {
        int size = denoiser.SampleSize;
        var samples = new float[(long)n * size];
        var streams = new NoiseStream[n];
        var uniforms = new double[n];
        var chosen = new int[n];
        var cumulative = new double[components.Count];
        double sum = 0;
        for (int j = 0; j < components.Count; j++) cumulative[j] = sum += components[j].Weight;
        for (int i = 0; i < n; i++)
        {
            streams[i] = new NoiseStream(seed, start + i);
            double pick = streams[i].NextDouble() * sum;
            int component = Array.FindIndex(cumulative, c => pick < c);
            chosen[i] = component < 0 ? components.Count - 1 : component; // pick = sum only by rounding
            uniforms[i] = 1 - streams[i].NextDouble(); // in (0, 1]
            streams[i].NextGaussian(samples.AsSpan(i * size, size));
        }
        int key = checked((int)start);
        bool saved = store?.TryLoad(key, samples) == true;
        for (int j = 0; j < components.Count && !saved; j++)
        {
            var members = Enumerable.Range(0, n).Where(i => chosen[i] == j).ToArray();
            if (members.Length == 0) continue;
            var tilt = new LinearTilt(denoiser, _reward.Transposed(components[j].U));
            for (int offset = 0; offset < members.Length; offset += Settings.BatchSize)
            {
                var batch = members.Skip(offset).Take(Settings.BatchSize).ToArray();
                var x = new float[batch.Length * size];
                for (int b = 0; b < batch.Length; b++) samples.AsSpan(batch[b] * size, size).CopyTo(x.AsSpan(b * size, size));
                _sampler.Sample(tilt, x, batch.Length, batch.Select(i => streams[i]).ToArray());
                for (int b = 0; b < batch.Length; b++) x.AsSpan(b * size, size).CopyTo(samples.AsSpan(batch[b] * size, size));
            }
        }
        if (!saved) store?.Save(key, samples, [n, .. denoiser.SampleShape]);
        return (samples, _reward.ProjectBatch(samples), uniforms);
    }
}
