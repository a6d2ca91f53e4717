using System.Text.Json.Serialization;
using OnnxAlign.Core;
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

    /// <summary>
    /// How <see cref="DistributionalAlignment.Run"/> samples the fitted tilt: <see cref="KlTiltMode.Exact"/> (SMC with
    /// <see cref="Exact"/>'s settings, or the defaults when it is null) or <see cref="KlTiltMode.Fast"/>; hybrid is refused.
    /// </summary>
    public KlTiltMode FinalMode { get; init; } = KlTiltMode.Exact;
}

/// <summary>
/// One iterate: the moments m_k = E_{q_k}[z], the objective Φ(m_k) + β KL_k and the change of θ. report.json's
/// <c>objective.trace</c> items leave u_k out (the final u is beside the trace).
/// </summary>
public sealed record AveragingIterate(int Iteration, [property: JsonIgnore] double[] U, double[] Moments, double Objective, double KlDivergence, double ThetaChange);

/// <summary>The fitted tilt and its convergence trace.</summary>
public sealed record DistributionalResult(double[] U, float[] Theta, IReadOnlyList<AveragingIterate> Trace, bool Converged, long NetworkEvaluations)
{
    /// <summary>report.json's <c>objective</c> block for the objective <paramref name="spec"/> at <paramref name="beta"/>.</summary>
    public ObjectiveReport Report(string spec, double beta) => new(spec, beta, Converged, U, Trace);

    /// <summary>True when the fit was read back from a checkpoint (a resumed run) rather than solved; its evaluations are those of the run that solved it.</summary>
    public bool Resumed { get; init; }

    /// <summary>The checkpoint note of this fit.</summary>
    internal DistributionalNote ToNote() =>
        new(U, Theta, [.. Trace.Select(t => new AveragingNoteIterate(t.Iteration, t.U, t.Moments, t.Objective, t.KlDivergence, t.ThetaChange))], Converged, NetworkEvaluations);

    /// <summary>The fit a checkpoint note keeps.</summary>
    internal static DistributionalResult FromNote(DistributionalNote note) =>
        new(note.U, note.Theta, note.Trace.Select(t => new AveragingIterate(t.Iteration, t.U, t.Moments, t.Objective, t.KlDivergence, t.ThetaChange)).ToList(),
            note.Converged, note.NetworkEvaluations) { Resumed = true };
}

/// <summary>report.json's <c>objective</c> block (DESIGN §5), serialised by <see cref="IO.ReportJson"/>.</summary>
/// <param name="Spec">The objective as given (a convex function of linear features).</param>
/// <param name="Beta">β of Φ(E_q[z]) + β·KL(q‖p).</param>
/// <param name="Converged">Dual averaging met its tolerance.</param>
/// <param name="U">The fitted u (θ = Aᵀu).</param>
/// <param name="Trace">Every iterate.</param>
public sealed record ObjectiveReport(string Spec, double Beta, bool Converged, double[] U, IReadOnlyList<AveragingIterate> Trace);

/// <summary>What <see cref="DistributionalAlignment.Run"/> returned.</summary>
/// <param name="Dual">The fitted tilt and its trace.</param>
/// <param name="Report">report.json's <c>objective</c> block.</param>
/// <param name="Final">The fitted tilt sampled, with its <c>final_tilt</c> block.</param>
public sealed record DistributionalAlignmentResult(DistributionalResult Dual, ObjectiveReport Report, FinalTilt Final)
{
    /// <summary>Network evaluations of the dual averaging and the final samples together.</summary>
    public long NetworkEvaluations => Dual.NetworkEvaluations + Final.Result.Samples.NetworkEvaluations;

    /// <summary>True when the fitted tilt came from the checkpoint (a resumed run) rather than being solved again.</summary>
    public bool Resumed => Dual.Resumed;
}

/// <summary>
/// min_q Φ(E_q[z]) + β·KL(q‖p) for z = Ax + c and convex Φ (DESIGN §5). The optimum is a tilt q_u ∝ p·exp⟨u, z⟩ with
/// u = −∇Φ(E_{q_u}[z])/β; dual averaging finds it: u_{k+1} = −(1/β)·Σ_{j≤k} (j+1)∇Φ(m_j) / Σ_{j≤k} (j+1), m_j from
/// exactly tilted samples of q_{u_j}. m_j and KL(q_{u_j}‖p) come from <see cref="FeatureLogPartition"/> (path quadrature
/// of log Z; a telescoped estimate is unusable here because the early iterates move far).
/// </summary>
public static class DistributionalAlignment
{
    /// <summary>
    /// Dual averaging, then the fitted tilt sampled in <see cref="DualAveragingSettings.FinalMode"/>: the library entry
    /// point of distributional alignment (what <c>onnxalign align --objective</c> runs). The iterates use the base law
    /// with x̂0 projected onto <paramref name="range"/> (DESIGN §1d), as the final tilt does.
    /// </summary>
    /// <param name="network">The model's denoiser (not disposed here: the caller owns it).</param>
    /// <param name="range">The data range x̂0 is projected onto; null for none.</param>
    /// <param name="sampler">The sampler whose law is p.</param>
    /// <param name="features">Φ of linear features (convex).</param>
    /// <param name="spec">The objective's text, for the report.</param>
    /// <param name="settings">β, the iterates' settings (its seed is theirs; the request's seed is the final samples') and the final tilt's mode.</param>
    /// <param name="request">Count, batch, seed, NaN policy and cancellation of the final samples; its cancellation stops the iterates too.</param>
    /// <param name="iterates">Each iterate, as it is found.</param>
    /// <param name="progress">Samples finished of the final tilt.</param>
    /// <param name="checkpoint">
    /// A resumable run's checkpoint, null for none: the fitted tilt is saved there once found (u, θ, the trace, cost,
    /// exactly) and read back by a resumed run instead of solving again (<see cref="DistributionalResult.Resumed"/>), and
    /// the final tilt keeps its finished batches (or SMC systems) there. The caller keys it to everything that determines the run.
    /// </param>
    /// <param name="solved">The fitted tilt, solved or read back, before the final tilt is sampled (and, when solved, before it is saved to <paramref name="checkpoint"/>).</param>
    /// <exception cref="ConfigException">Φ is not convex (parameter <c>objective</c>), β is not finite and positive (parameter <c>beta</c>), the hybrid final mode (parameter <c>mode</c>), or a checkpoint whose saved fit is not of this objective (parameter <c>checkpoint</c>).</exception>
    /// <exception cref="OperationCanceledException">The request's cancellation fired (within one network call).</exception>
    /// <exception cref="NonFiniteException">A final sample turned NaN/±∞ under <see cref="NonFinitePolicy.Stop"/> (the fit is kept in the checkpoint).</exception>
    public static DistributionalAlignmentResult Run(IDenoiser network, DataRange? range, Sampler sampler, FeatureReward features, string spec,
                                                    DualAveragingSettings settings, GenerationRequest request, IProgress<AveragingIterate>? iterates = null,
                                                    IProgress<GenerationProgress>? progress = null, BatchCheckpoint? checkpoint = null,
                                                    IProgress<DistributionalResult>? solved = null)
    {
        Check(features, settings);
        DistributionalResult dual;
        if (SolutionNote.Read<DistributionalNote>(checkpoint) is { } note)
        {
            SolutionNote.CheckSizes(note.U.Length == features.FeatureCount && note.Theta.Length == network.SampleSize);
            dual = DistributionalResult.FromNote(note);
            solved?.Report(dual);
        }
        else
        {
            dual = Solve(ExactTilt.BaseLaw(network, range), sampler, features, settings, iterates, request.Cancellation);
            solved?.Report(dual);
            SolutionNote.Write(checkpoint, dual.ToNote());
        }
        return new DistributionalAlignmentResult(dual, dual.Report(spec, settings.Beta),
            FinalTilt.Sample(network, range, sampler, dual.Theta, settings.FinalMode, settings.Exact, request, progress, checkpoint));
    }

    /// <summary>Checks an objective and its settings before any work is done.</summary>
    /// <exception cref="ConfigException">Φ is not convex (parameter <c>objective</c>), β is not finite and positive (parameter <c>beta</c>), or the hybrid final mode (parameter <c>mode</c>).</exception>
    public static void Check(FeatureReward features, DualAveragingSettings settings)
    {
        CheckObjective(features, settings.Beta);
        FinalTilt.CheckMode(settings.FinalMode);
    }

    private static void CheckObjective(FeatureReward features, double beta)
    {
        if (features.Function.Curvature != Curvature.Convex)
            throw ConfigException.For("objective", $"'{features.Name}': Φ = {features.Function.Name} is not convex (convex: sq-dist, cross-entropy, variance, quadratic with M ⪰ 0, …)");
        if (!(beta > 0) || !double.IsFinite(beta)) throw ConfigException.For("beta", $"{beta}: expected a finite value > 0");
    }

    /// <summary>Runs dual averaging with Φ = <paramref name="features"/>' function of its features (the global set-up of a distributional run, DESIGN §10).</summary>
    /// <param name="denoiser">The base law p (the caller projects it, <see cref="ExactTilt.BaseLaw"/>).</param>
    /// <param name="sampler">The sampler whose law is p.</param>
    /// <param name="features">Φ of linear features (convex).</param>
    /// <param name="settings">β and the iterates' settings; null for the defaults.</param>
    /// <param name="iterates">Each iterate, as it is found.</param>
    /// <param name="cancellation">Stops within one network call (<see cref="NetworkCancellation"/>).</param>
    /// <exception cref="OperationCanceledException"><paramref name="cancellation"/> fired.</exception>
    public static DistributionalResult Solve(IDenoiser denoiser, Sampler sampler, FeatureReward features, DualAveragingSettings? settings = null,
                                             IProgress<AveragingIterate>? iterates = null, CancellationToken cancellation = default)
    {
        settings ??= new DualAveragingSettings();
        if (settings.SamplesPerIteration < 2) throw ConfigException.For("DualAveragingSettings.SamplesPerIteration", $"{settings.SamplesPerIteration}: expected ≥ 2 (an iterate's standard errors need two samples)");
        using var cancellationScope = NetworkCancellation.Enter(cancellation);
        CheckObjective(features, settings.Beta);
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
            iterates?.Report(iterate);
            cancellation.ThrowIfCancellationRequested();
            lastThetaChange = thetaChange;
            if (iteration > 2 && Norm(change) <= settings.Tolerance * Math.Max(Norm(next), 1e-12)) { u = next; converged = true; break; }
            u = next;
        }
        return new DistributionalResult(u, features.Transposed(u), trace, converged, partition.NetworkEvaluations + exactEvaluations);
    }

    private static double Norm(IEnumerable<double> v) => Math.Sqrt(v.Sum(a => a * a));

    private static double Norm(float[] v) => Math.Sqrt(v.Sum(a => (double)a * a));
}
