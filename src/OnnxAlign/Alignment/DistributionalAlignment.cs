using OnnxAlign.Estimation;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment;

/// <summary>Settings of <see cref="DistributionalAlignment"/>.</summary>
public sealed record DualAveragingSettings
{
    /// <summary>β of Φ(E_q[z]) + β·KL(q‖p).</summary>
    public double Beta { get; init; } = 1;

    /// <summary>Iteration limit.</summary>
    public int MaxIterations { get; init; } = 40;

    /// <summary>Stop when ‖u_{k+1} − u_k‖ falls below this fraction of ‖u_{k+1}‖.</summary>
    public double Tolerance { get; init; } = 0.01;

    /// <summary>Exactly tilted samples per iterate.</summary>
    public int SamplesPerIteration { get; init; } = 512;

    /// <summary>Samples per network call.</summary>
    public int BatchSize { get; init; } = 256;

    /// <summary>Noise seed (each iterate its own).</summary>
    public long Seed { get; init; }

    /// <summary>
    /// How each iterate's tilt is sampled: the exact tilt's SMC, whose weights give E_q[z] and KL(q‖p) of the law
    /// itself (its count and seed are the iterate's), or null for fast tilts with log Z by path quadrature (exact for
    /// the true score only).
    /// </summary>
    public ExactTiltSettings? Exact { get; init; }
}

/// <summary>One iterate: the moments m_k = E_{q_k}[z], the objective Φ(m_k) + β KL_k and the change of θ.</summary>
public sealed record AveragingIterate(int Iteration, double[] U, double[] Moments, double Objective, double KlDivergence, double ThetaChange);

/// <summary>The fitted tilt and its convergence trace.</summary>
public sealed record DistributionalResult(double[] U, float[] Theta, IReadOnlyList<AveragingIterate> Trace, bool Converged, long NetworkEvaluations);

/// <summary>
/// min_q Φ(E_q[z]) + β·KL(q‖p) for z = Ax + c and convex Φ (DESIGN §5). The optimum is a tilt q_u ∝ p·exp⟨u, z⟩ with
/// u = −∇Φ(E_{q_u}[z])/β; dual averaging finds it: u_{k+1} = −(1/β)·Σ_{j≤k} (j+1)∇Φ(m_j) / Σ_{j≤k} (j+1), m_j from
/// exactly tilted samples of q_{u_j}. m_j and KL(q_{u_j}‖p) come from <see cref="FeatureLogPartition"/> (path quadrature
/// of log Z; a telescoped estimate is unusable here because the early iterates move far).
/// </summary>
public static class DistributionalAlignment
{
    /// <summary>Runs dual averaging with Φ = <paramref name="features"/>' function of its features.</summary>
    public static DistributionalResult Solve(IDenoiser denoiser, Sampler sampler, FeatureReward features, DualAveragingSettings? settings = null,
                                             Action<AveragingIterate>? onIterate = null)
    {
        settings ??= new DualAveragingSettings();
        if (!(settings.Beta > 0) || !double.IsFinite(settings.Beta)) throw new ArgumentException("β must be a positive finite number");
        if (features.Function.Curvature != Curvature.Convex) throw new ArgumentException($"Φ = {features.Function.Name} is not convex");
        var partition = new FeatureLogPartition(denoiser, sampler, features,
            new LogPartitionSettings { Nodes = 4, SamplesPerNode = settings.SamplesPerIteration, BatchSize = settings.BatchSize, Seed = settings.Seed });
        int k = features.FeatureCount;
        var u = new double[k];
        var averaged = new double[k];
        double weights = 0, lastThetaChange = 0;
        long exactEvaluations = 0;
        var trace = new List<AveragingIterate>();
        bool converged = false;
        for (int iteration = 0; iteration <= settings.MaxIterations; iteration++)
        {
            double[] m;
            double kl;
            if (settings.Exact is { } exact && u.Any(v => v != 0))
            {
                var smc = ExactTilt.Sample(denoiser, null, sampler, features.Transposed(u),
                    exact with { Count = settings.SamplesPerIteration, Smc = exact.Smc with { Seed = settings.Seed + 7919L * (iteration + 1) } });
                exactEvaluations += smc.Particles.NetworkEvaluations;
                var z = features.ProjectBatch(smc.Particles.Samples);
                m = Enumerable.Range(0, k).Select(j => smc.Particles.Mean(z.Select(row => row[j]).ToArray()).Value).ToArray();
                kl = smc.KlDivergence.Value;
            }
            else
            {
                var stats = partition.At(u);
                m = stats.MeanFeatures;
                kl = stats.KlDivergence.Value;
            }
            var gradient = new double[k];
            double phi = features.Function.Gradient(m, gradient);
            averaged = averaged.Select((a, j) => (a * weights + (iteration + 1) * gradient[j]) / (weights + iteration + 1)).ToArray();
            weights += iteration + 1;
            var next = averaged.Select(g => -g / settings.Beta).ToArray();
            var change = next.Select((v, j) => v - u[j]).ToArray();
            double thetaChange = Norm(features.Transposed(change));
            var iterate = new AveragingIterate(iteration, (double[])u.Clone(), m, phi + settings.Beta * kl, kl, lastThetaChange);
            trace.Add(iterate);
            onIterate?.Invoke(iterate);
            lastThetaChange = thetaChange;
            if (iteration > 2 && Norm(change) <= settings.Tolerance * Math.Max(Norm(next), 1e-12)) { u = next; converged = true; break; }
            u = next;
        }
        return new DistributionalResult(u, features.Transposed(u), trace, converged, partition.NetworkEvaluations + exactEvaluations);
    }

    private static double Norm(IEnumerable<double> v) => Math.Sqrt(v.Sum(a => a * a));

    private static double Norm(float[] v) => Math.Sqrt(v.Sum(a => (double)a * a));
}
