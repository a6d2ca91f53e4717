using OnnxAlign.Core;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Estimation;

/// <summary>log Z(θ) and KL(q_θ‖p) of a tilt, from tilted samples only.</summary>
public sealed record TiltStatistics(Estimate LogPartition, Estimate KlDivergence, Estimate TiltedMeanProjection, long NetworkEvaluations);

/// <summary>
/// The log-partition function of a linear tilt by path quadrature (DESIGN §1): ∇_θ log Z = E_{q_θ}[x], so
/// log Z(θ) = ∫_0^1 ⟨θ, E_{q_{sθ}}[x]⟩ ds, computed with Gauss–Legendre nodes s_j on [0, 1], a batch of tilted
/// samples per node. KL(q_θ‖p) = ⟨θ, E_{q_θ}[x]⟩ − log Z(θ). Only the projection ⟨θ, x⟩ of each sample is needed.
/// </summary>
public static class LogPartition
{
    /// <summary>Estimates log Z(θ) and KL with <paramref name="nodes"/> quadrature nodes and <paramref name="samplesPerNode"/> samples each.</summary>
    /// <param name="denoiser">The base law.</param>
    /// <param name="sampler">The sampler to draw tilted samples with.</param>
    /// <param name="theta">θ.</param>
    /// <param name="nodes">Gauss–Legendre nodes.</param>
    /// <param name="samplesPerNode">Samples drawn at each node (and at s = 1 for E_{q_θ}).</param>
    /// <param name="seed">Noise seed; nodes use disjoint index ranges of the same seed.</param>
    /// <param name="batchSize">Samples per network call.</param>
    /// <param name="tiltedProjections">⟨θ, x⟩ of samples already drawn from q_θ (skips a batch at s = 1), or null.</param>
    public static TiltStatistics Estimate(IDenoiser denoiser, Sampler sampler, ReadOnlySpan<float> theta, int nodes = 8, int samplesPerNode = 256,
                                          long seed = 0, int batchSize = 256, IReadOnlyList<double>? tiltedProjections = null)
    {
        // The one feature z = ⟨θ, x⟩ (f = max of one value is the identity, and unused here) at u = 1.
        var feature = new FeatureReward("θ", theta, 1, new FeatureFunction.Extreme(largest: true));
        var partition = new FeatureLogPartition(denoiser, sampler, feature,
            new LogPartitionSettings { Nodes = nodes, SamplesPerNode = samplesPerNode, BatchSize = batchSize, Seed = seed });
        var stats = partition.At([1.0], tiltedProjections?.Select(v => new[] { v }).ToArray());
        return new TiltStatistics(stats.LogPartition, stats.KlDivergence, new Estimate(stats.MeanFeatures[0], stats.MeanStandardErrors[0]),
                                  partition.NetworkEvaluations);
    }

    /// <summary>Gauss–Legendre nodes and weights on [0, 1] (Newton iteration on P_n; exact for polynomials of degree 2n − 1).</summary>
    public static (double[] Points, double[] Weights) GaussLegendre(int n)
    {
        if (n < 1) throw new ArgumentOutOfRangeException(nameof(n));
        var points = new double[n];
        var weights = new double[n];
        for (int i = 0; i < n; i++)
        {
            double z = Math.Cos(Math.PI * (i + 0.75) / (n + 0.5)), derivative;
            while (true)
            {
                double p0 = 1, p1 = 0;
                for (int k = 1; k <= n; k++) (p0, p1) = (((2 * k - 1) * z * p0 - (k - 1) * p1) / k, p0);
                derivative = n * (z * p0 - p1) / (z * z - 1);
                double step = p0 / derivative;
                z -= step;
                if (Math.Abs(step) < 1e-15) break;
            }
            points[n - 1 - i] = (1 + z) / 2;           // map [−1, 1] → [0, 1], ascending
            weights[n - 1 - i] = 1 / ((1 - z * z) * derivative * derivative);  // 2/((1−z²)P'²) × ½
        }
        return (points, weights);
    }

    /// <summary>⟨θ, x_i⟩ for each sample.</summary>
    public static double[] Projections(ReadOnlySpan<float> samples, ReadOnlySpan<float> theta)
    {
        int size = theta.Length, n = samples.Length / size;
        var result = new double[n];
        for (int i = 0; i < n; i++) result[i] = System.Numerics.Tensors.TensorPrimitives.Dot(samples.Slice(i * size, size), theta);
        return result;
    }

    /// <summary>Sample mean and its standard error (NaN for no values: every sample of a run was skipped as NaN/±∞; a report writes null).</summary>
    public static (double Mean, double StandardError) MeanAndStandardError(IReadOnlyList<double> values)
    {
        if (values.Count == 0) return (double.NaN, double.NaN);
        double mean = values.Average();
        double variance = values.Sum(v => (v - mean) * (v - mean)) / Math.Max(values.Count - 1, 1);
        return (mean, Math.Sqrt(variance / values.Count));
    }
}
