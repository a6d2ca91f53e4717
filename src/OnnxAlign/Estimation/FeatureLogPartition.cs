using System.Collections.Concurrent;
using OnnxAlign.Core;
using OnnxAlign.Guidance;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Estimation;

/// <summary>How <see cref="FeatureLogPartition"/> estimates log Z: quadrature nodes, samples per node, noise seed.</summary>
public sealed record LogPartitionSettings
{
    /// <summary>Gauss–Legendre nodes on the path s ∈ [0, 1].</summary>
    public int Nodes { get; init; } = 6;

    /// <summary>Tilted samples drawn at each node (and at s = 1 for E_q[z]).</summary>
    public int SamplesPerNode { get; init; } = 256;

    /// <summary>Samples per network call.</summary>
    public int BatchSize { get; init; } = 256;

    /// <summary>Noise seed; every batch uses its own block of sample indices, so all batches are independent.</summary>
    public long Seed { get; init; } = 1_000_003;
}

/// <summary>The statistics of one tilt q_u ∝ p·exp⟨u, z⟩ of the features z = Ax + c.</summary>
/// <param name="U">u (k values); the tilt of x is θ = Aᵀu.</param>
/// <param name="LogPartition">L(u) = log E_p exp⟨u, z⟩ = ⟨u, c⟩ + log Z(Aᵀu), with its standard error.</param>
/// <param name="MeanFeatures">E_{q_u}[z] = ∇L(u).</param>
/// <param name="MeanStandardErrors">Standard errors of <paramref name="MeanFeatures"/>.</param>
/// <param name="KlDivergence">KL(q_u‖p) = ⟨u, E_{q_u}[z]⟩ − L(u).</param>
/// <param name="NetworkEvaluations">What this estimate cost.</param>
public sealed record FeatureTiltStatistics(double[] U, Estimate LogPartition, double[] MeanFeatures, double[] MeanStandardErrors,
                                           Estimate KlDivergence, long NetworkEvaluations);

/// <summary>
/// log Z and tilted means on the k-dimensional feature space (DESIGN §1, §2). Tilts of the form θ = Aᵀu only need
/// the features z = Ax + c of samples: ∇L(u) = E_{q_u}[z], so L(u) = ∫_0^1 ⟨u, E_{q_{su}}[z]⟩ ds by Gauss–Legendre
/// quadrature, a batch of exactly tilted samples (<see cref="LinearTilt"/>) per node. Results are cached per u and
/// carry standard errors (independent batches, so node variances add with the squared weights).
/// Thread-safe; batches are drawn in the order of the calls, so a fixed call sequence gives fixed results.
/// </summary>
public sealed class FeatureLogPartition
{
    private readonly IDenoiser _denoiser;
    private readonly Sampler _sampler;
    private readonly ConcurrentDictionary<string, FeatureTiltStatistics> _cache = new();
    private readonly (double[] Points, double[] Weights) _quadrature;
    private int _nextBlock;
    private long _evaluations;

    /// <summary>Estimates for the features of <paramref name="features"/> (its f is not used).</summary>
    public FeatureLogPartition(IDenoiser denoiser, Sampler sampler, FeatureReward features, LogPartitionSettings? settings = null)
    {
        if (features.Size != denoiser.SampleSize)
            throw new ArgumentException($"the features have {features.Size} values per sample, the model's samples {denoiser.SampleSize}");
        (_denoiser, _sampler, Features, Settings) = (denoiser, sampler, features, settings ?? new LogPartitionSettings());
        if (Settings.Nodes < 1 || Settings.SamplesPerNode < 2 || Settings.BatchSize < 1)
            throw new ArgumentException("log Z needs ≥ 1 node, ≥ 2 samples per node and a batch ≥ 1");
        _quadrature = LogPartition.GaussLegendre(Settings.Nodes);
    }

    /// <summary>The features z = Ax + c.</summary>
    public FeatureReward Features { get; }

    /// <summary>The estimator's settings.</summary>
    public LogPartitionSettings Settings { get; }

    /// <summary>k.</summary>
    public int FeatureCount => Features.FeatureCount;

    /// <summary>Network evaluations spent so far (all estimates and batches).</summary>
    public long NetworkEvaluations => Interlocked.Read(ref _evaluations);

    /// <summary>z = Ax + c of each sample in <paramref name="samples"/>.</summary>
    public double[][] Project(ReadOnlySpan<float> samples) => Features.ProjectBatch(samples);

    /// <summary>
    /// <paramref name="count"/> fresh samples of q_u (each call uses its own block of noise indices) and their features.
    /// u = 0 draws from the base law p.
    /// </summary>
    public (float[] Samples, double[][] Features) TiltedBatch(ReadOnlySpan<double> u, int count)
    {
        int block = Interlocked.Increment(ref _nextBlock) - 1;
        IDenoiser denoiser = u.ToArray().All(v => v == 0) ? _denoiser : new LinearTilt(_denoiser, Features.Transposed(u));
        var request = new GenerationRequest
        {
            Count = checked(count * (block + 1)), BatchSize = Settings.BatchSize, Seed = Settings.Seed, Shard = new Shard(block, block + 1),
        };
        var result = Generation.Run(denoiser, _sampler, request);
        Interlocked.Add(ref _evaluations, result.NetworkEvaluations);
        return (result.Samples, Project(result.Samples));
    }

    /// <summary>L(u), E_{q_u}[z] and KL(q_u‖p), cached per u.</summary>
    /// <param name="u">The tilt of the features.</param>
    /// <param name="tiltedFeatures">Features of samples already drawn from q_u, used for E_{q_u}[z] instead of a new batch; or null.</param>
    public FeatureTiltStatistics At(ReadOnlySpan<double> u, IReadOnlyList<double[]>? tiltedFeatures = null)
    {
        if (u.Length != FeatureCount) throw new ArgumentException($"u has {u.Length} values, the features {FeatureCount}");
        string key = string.Join(",", u.ToArray().Select(v => BitConverter.DoubleToInt64Bits(v)));
        if (_cache.TryGetValue(key, out var cached)) return cached;
        var uArray = u.ToArray();
        long before = NetworkEvaluations;
        double logZ = 0, logZVariance = 0;
        if (uArray.Any(v => v != 0))
        {
            var (points, weights) = _quadrature;
            for (int j = 0; j < points.Length; j++)
            {
                var (_, z) = TiltedBatch(uArray.Select(v => v * points[j]).ToArray(), Settings.SamplesPerNode);
                var (mean, se) = LogPartition.MeanAndStandardError(z.Select(zi => Dot(uArray, zi)).ToArray());
                logZ += weights[j] * mean;
                logZVariance += weights[j] * weights[j] * se * se;
            }
        }
        var tilted = tiltedFeatures is { Count: > 1 } ? tiltedFeatures : TiltedBatch(uArray, Settings.SamplesPerNode).Features;
        var means = new double[FeatureCount];
        var errors = new double[FeatureCount];
        for (int j = 0; j < FeatureCount; j++)
            (means[j], errors[j]) = LogPartition.MeanAndStandardError(tilted.Select(zi => zi[j]).ToArray());
        var (projectionMean, projectionSe) = LogPartition.MeanAndStandardError(tilted.Select(zi => Dot(uArray, zi)).ToArray());
        // The s = 1 batch is independent of the quadrature batches, so the variances of the two KL terms add.
        var stats = new FeatureTiltStatistics(uArray, new Estimate(logZ, Math.Sqrt(logZVariance)), means, errors,
            new Estimate(projectionMean - logZ, Math.Sqrt(projectionSe * projectionSe + logZVariance)), NetworkEvaluations - before);
        return _cache.GetOrAdd(key, stats);
    }

    internal static double Dot(ReadOnlySpan<double> a, ReadOnlySpan<double> b) => Numerics.Dot(a, b);
}
