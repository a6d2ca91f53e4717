using OnnxAlign.Core;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment;

/// <summary>log of a density ratio dπ/dp up to a constant, on one sample (e.g. ⟨θ, x⟩ for a linear tilt, r(x)/λ for a reward).</summary>
public delegate double LogPotential(ReadOnlySpan<float> sample);

/// <summary>A log-potential G on a batch: <paramref name="values"/>[i] = G(sample i) for samples.Length / values.Length values per sample
/// (a network reward evaluates a batch in one call).</summary>
public delegate void BatchPotential(ReadOnlySpan<float> samples, Span<double> values);

/// <summary>Log-potentials of the SMC samplers (DESIGN §1d, §8).</summary>
public static class Potentials
{
    /// <summary>A per-sample potential applied to each sample of a batch.</summary>
    public static BatchPotential Batch(LogPotential potential) => (samples, values) =>
    {
        int size = samples.Length / Math.Max(values.Length, 1);
        for (int i = 0; i < values.Length; i++) values[i] = potential(samples.Slice(i * size, size));
    };

    /// <summary>G = r/λ of a reward, evaluated a batch at a time.</summary>
    public static BatchPotential Reward(Reward reward, double lambda) => (samples, values) =>
    {
        var r = reward.EvaluateBatch(samples);
        for (int i = 0; i < values.Length; i++) values[i] = r[i] / lambda;
    };

    /// <summary>G of every sample of a batch, as an array.</summary>
    public static double[] Evaluate(this BatchPotential potential, ReadOnlySpan<float> samples, int count)
    {
        var values = new double[count];
        potential(samples, values);
        return values;
    }
}

/// <summary>
/// The output of a sequential Monte Carlo run (DESIGN §1d, §8): particles from independent systems, each system with
/// its unbiased estimate Ẑ_b of Z = E_p[e^G] and its particles' normalised weights, so that particle i of system b
/// carries weight ∝ Ẑ_b·w_{b,i}. Estimates over the set are ratio estimators Σ_b Ẑ_b μ_b / Σ_b Ẑ_b: consistent as the
/// number of systems grows, whatever the particles per system (the unnormalised particle measure is unbiased).
/// </summary>
public sealed class WeightedParticles
{
    /// <summary>Builds the set from systems in order.</summary>
    /// <param name="samples">All particles, system after system, sample after sample.</param>
    /// <param name="sampleSize">Values per sample.</param>
    /// <param name="systemSizes">Particles per system.</param>
    /// <param name="withinLogWeights">Each particle's log weight within its system (any constant per system).</param>
    /// <param name="systemLogNormalizers">log Ẑ_b per system.</param>
    /// <param name="networkEvaluations">What the run cost (a batch of B counts B).</param>
    /// <param name="resamplings">Resampling events over all systems.</param>
    public WeightedParticles(float[] samples, int sampleSize, IReadOnlyList<int> systemSizes, IReadOnlyList<double> withinLogWeights,
                             IReadOnlyList<double> systemLogNormalizers, long networkEvaluations, int resamplings)
    {
        int count = systemSizes.Sum();
        if (samples.Length != (long)count * sampleSize || withinLogWeights.Count != count || systemLogNormalizers.Count != systemSizes.Count)
            throw new ArgumentException("particles, weights and systems do not agree");
        Samples = samples;
        SampleSize = sampleSize;
        SystemSizes = systemSizes;
        SystemLogNormalizers = systemLogNormalizers;
        NetworkEvaluations = networkEvaluations;
        Resamplings = resamplings;
        // log weight of particle (b, i): log Ẑ_b + ℓ_{b,i} − log Σ_j e^{ℓ_{b,j}}; a particle that turned non-finite has weight 0.
        LogWeights = new double[count];
        int offset = 0;
        for (int b = 0; b < systemSizes.Count; b++)
        {
            var within = withinLogWeights.Skip(offset).Take(systemSizes[b]).ToArray();
            double normalizer = Numerics.LogSumExp(within);
            for (int i = 0; i < within.Length; i++)
                LogWeights[offset + i] = double.IsNegativeInfinity(normalizer) ? double.NegativeInfinity : systemLogNormalizers[b] + within[i] - normalizer;
            offset += systemSizes[b];
        }
        if (LogWeights.All(double.IsNegativeInfinity)) throw new InvalidOperationException("every particle has weight 0");
        Weights = WeightedSamples.Normalize(LogWeights.Select(l => double.IsNaN(l) ? double.NegativeInfinity : l).ToArray());
        EffectiveSampleSize = WeightedSamples.EffectiveSampleSize(Weights);
        var systemWeights = WeightedSamples.Normalize(systemLogNormalizers.ToArray());
        SystemEffectiveSize = WeightedSamples.EffectiveSampleSize(systemWeights);
    }

    /// <summary>The particles, one after another.</summary>
    public float[] Samples { get; }

    /// <summary>Number of particles.</summary>
    public int Count => LogWeights.Length;

    /// <summary>Values per sample.</summary>
    public int SampleSize { get; }

    /// <summary>Particles per system.</summary>
    public IReadOnlyList<int> SystemSizes { get; }

    /// <summary>log Ẑ_b per system.</summary>
    public IReadOnlyList<double> SystemLogNormalizers { get; }

    /// <summary>Unnormalised log weights comparable over the whole set.</summary>
    public double[] LogWeights { get; }

    /// <summary>Normalised weights.</summary>
    public double[] Weights { get; }

    /// <summary>Kish's effective sample size of <see cref="Weights"/>. Resampling inside a system makes particles share
    /// ancestors, so this is an upper bound on the information; <see cref="SystemEffectiveSize"/> says how many systems count.</summary>
    public double EffectiveSampleSize { get; }

    /// <summary>Effective number of systems, (ΣẐ_b)²/ΣẐ_b² normalised.</summary>
    public double SystemEffectiveSize { get; }

    /// <summary>What the run cost.</summary>
    public long NetworkEvaluations { get; }

    /// <summary>Resampling events over all systems.</summary>
    public int Resamplings { get; }

    /// <summary>Network evaluations per effective sample (<see cref="NetworkEvaluations"/> / <see cref="EffectiveSampleSize"/>).</summary>
    public double EvaluationsPerEffectiveSample => NetworkEvaluations / EffectiveSampleSize;

    /// <summary>log Z = log mean_b Ẑ_b with its standard error across systems (infinite with one system).</summary>
    public Estimate LogNormalizer
    {
        get
        {
            // Systems of different sizes: weight each Ẑ_b by its particles (a larger system is a better estimate).
            double total = SystemSizes.Sum();
            var weighted = SystemLogNormalizers.Select((l, b) => l + Math.Log(SystemSizes[b] * SystemSizes.Count / total)).ToArray();
            var (value, se) = WeightedSamples.LogMeanExp(weighted);
            return new Estimate(value, se);
        }
    }

    /// <summary>
    /// E_π[v] by the weights, with a standard error: across systems (the ratio estimator's delta method) when there are
    /// at least 4, which accounts for the correlation resampling creates; otherwise the particle-level delta method.
    /// </summary>
    public Estimate Mean(IReadOnlyList<double> values)
    {
        if (values.Count != Count) throw new ArgumentException($"expected {Count} values, got {values.Count}");
        var (mean, particleSe) = WeightedSamples.Mean(values, Weights);
        if (SystemSizes.Count < 4) return new Estimate(mean, particleSe);
        var systemWeights = WeightedSamples.Normalize(SystemLogNormalizers.ToArray());
        var systemMeans = new double[SystemSizes.Count];
        int offset = 0;
        for (int b = 0; b < SystemSizes.Count; b++)
        {
            double sum = 0, weight = 0;
            for (int i = offset; i < offset + SystemSizes[b]; i++) { sum += Weights[i] * values[i]; weight += Weights[i]; }
            systemMeans[b] = weight > 0 ? sum / weight : mean;
            offset += SystemSizes[b];
        }
        var (_, systemSe) = WeightedSamples.Mean(systemMeans, systemWeights);
        return new Estimate(mean, Math.Max(systemSe, particleSe));
    }

    /// <summary>Weighted standard deviation of <paramref name="values"/>.</summary>
    public double StandardDeviation(IReadOnlyList<double> values) => WeightedSamples.StandardDeviation(values, Weights);

    /// <summary>
    /// <paramref name="count"/> samples of π by systematic resampling of the weighted particles (one uniform from the
    /// stream (seed, −1)); returns them and which particle each is. Copies appear where a weight exceeds 1/count.
    /// </summary>
    public (float[] Samples, int[] Picks) Resample(int count, long seed)
    {
        var picks = WeightedSamples.Systematic(Weights, count, new NoiseStream(seed, -1).NextDouble());
        var samples = new float[(long)count * SampleSize];
        for (int k = 0; k < count; k++) Samples.AsSpan(picks[k] * SampleSize, SampleSize).CopyTo(samples.AsSpan(k * SampleSize, SampleSize));
        return (samples, picks);
    }
}
