using Xunit.Abstractions;
using OnnxAlign.ModelForge;
using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Estimation;
using OnnxAlign.IO;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Tests;

/// <summary>Constrained alignment (DESIGN §4) and preference fits on gmm2d, whose tilted moments are known exactly.</summary>
public class ConstrainedTests(ITestOutputHelper output, ModelSessions sessions) : IClassFixture<ModelSessions>
{
    private static readonly string Dir = Directions();

    private static string Directions()
    {
        string dir = TestSupport.TempDirectory();
        NpyFile.Write(Path.Combine(dir, "e0.npy"), [1f, 0f], [2]);
        NpyFile.Write(Path.Combine(dir, "e1.npy"), [0f, 1f], [2]);
        return dir;
    }

    private static Constraint Parse(string text) => Constraint.Parse(text.Replace("{dir}", Dir), [2], null);

    /// <summary>
    /// The exact optimum for E[x0] ≥ 1, E[x1] ≤ −1 on the mixture: Newton on the exact dual, whose gradient and Hessian
    /// are the tilted mixture's mean and covariance (DESIGN §1: a tilted mixture is a mixture).
    /// </summary>
    private static double[] ExactMultipliers(double b0, double b1)
    {
        var mu = new double[2];
        for (int k = 0; k < 100; k++)
        {
            var q = ToyModels.Gmm2d.Tilted([mu[0], -mu[1]]);
            var mean = q.Mean();
            var cov = q.Covariance();
            double g0 = b0 - mean[0], g1 = -(b1 - mean[1]);             // −slack
            double h00 = cov[0], h01 = -cov[1], h11 = cov[3];             // S C S with S = diag(1, −1)
            double det = h00 * h11 - h01 * h01;
            mu[0] += (h11 * g0 - h01 * g1) / det;
            mu[1] += (h00 * g1 - h01 * g0) / det;
        }
        return mu;
    }

    [Theory]
    [InlineData(DualMethod.Newton, false)]
    [InlineData(DualMethod.ProjectedAscent, false)]
    [InlineData(DualMethod.Newton, true)]
    public void TwoActiveConstraintsReachTheExactOptimum(DualMethod method, bool exactIterates)
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        var constraints = new[] { Parse("direction:{dir}/e0.npy>=1"), Parse("direction:{dir}/e1.npy<=-1") };
        var result = ConstrainedAlignment.Solve(denoiser, Sampler.Create("ddim", model.Config, 50), constraints,
            new ConstrainedSettings { Method = method, SamplesPerIteration = 2000, Seed = 3, MaxIterations = method == DualMethod.Newton ? 20 : 200,
                                      Exact = exactIterates ? new ExactTiltSettings() : null });
        var exact = ExactMultipliers(1, -1);
        foreach (var it in result.Trace.TakeLast(3))
            output.WriteLine($"{it.Iteration}: μ = ({it.Mu[0]:F4}, {it.Mu[1]:F4}), slacks ({it.Slacks[0]:F4}, {it.Slacks[1]:F4}), KL {it.KlDivergence:F4}");
        output.WriteLine($"{method}: {result.Trace.Count} iterates, μ = ({result.Mu[0]:F4}, {result.Mu[1]:F4}), exact ({exact[0]:F4}, {exact[1]:F4})");
        Assert.True(result.Converged);
        Assert.Null(result.Infeasible);
        // The solver stops once the slacks are within 2 standard errors of 0, so μ is off by at most H⁻¹·(2 se): bound it by 4 se / λ_min(H).
        var q = ToyModels.Gmm2d.Tilted([exact[0], -exact[1]]);
        var cov = q.Covariance();
        double lambdaMin = Numerics.SymmetricEigenvalues([cov[0], -cov[1], -cov[1], cov[3]], 2).Min();
        double tolerance = 4 * result.Check.StandardErrors.Max() / lambdaMin;
        Assert.InRange(result.Mu[0], exact[0] - tolerance, exact[0] + tolerance);
        Assert.InRange(result.Mu[1], exact[1] - tolerance, exact[1] + tolerance);
        // Constraint satisfaction on a fresh batch, within 3 standard errors.
        Assert.All(result.Check.Slacks.Zip(result.Check.StandardErrors), p => Assert.True(p.First > -3 * p.Second, $"slack {p.First} se {p.Second}"));
        // The KL estimate (telescoped log Z) against the exact KL of the tilt.
        double klExact = exact[0] * q.Mean()[0] - exact[1] * q.Mean()[1] - ToyModels.Gmm2d.LogPartition([exact[0], -exact[1]]);
        output.WriteLine($"KL {result.Trace[^1].KlDivergence:F4} vs exact {klExact:F4}");
        Assert.InRange(result.Trace[^1].KlDivergence, klExact - 0.15 * klExact - 0.05, klExact + 0.15 * klExact + 0.05);
    }

    [Fact]
    public void AnInactiveConstraintKeepsTheBaseLawAndARelativeThresholdUsesTheBaseMoments()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        var constraints = new[] { Parse("direction:{dir}/e0.npy>=-5"), Parse("direction:{dir}/e1.npy>=mean+1std") };
        var result = ConstrainedAlignment.Solve(denoiser, Sampler.Create("ddim", model.Config, 50), constraints, new ConstrainedSettings { SamplesPerIteration = 2000, Seed = 5 });
        Assert.True(result.Converged);
        Assert.Equal(0, result.Mu[0]);
        Assert.True(result.Mu[1] > 0);
        Assert.Equal(result.BaseMeans[1] + result.BaseStds[1], result.Thresholds[1], 12);
        double exactMean = ToyModels.Gmm2d.Mean()[1], exactStd = Math.Sqrt(ToyModels.Gmm2d.Covariance()[3]);
        Assert.InRange(result.Thresholds[1], exactMean + exactStd - 0.1, exactMean + exactStd + 0.1);
    }

    [Fact]
    public void ContradictoryConstraintsAreReportedInfeasible()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        var constraints = new[] { Parse("direction:{dir}/e0.npy>=1"), Parse("direction:{dir}/e0.npy<=0") };
        var result = ConstrainedAlignment.Solve(denoiser, Sampler.Create("ddim", model.Config, 20), constraints, new ConstrainedSettings { SamplesPerIteration = 500, Seed = 1 });
        Assert.False(result.Converged);
        Assert.NotNull(result.Infeasible);
        Assert.Contains(result.Infeasible, constraints.Select(c => c.Text));
    }

    /// <summary>
    /// The library entry point (issue #16): the dual, the chosen tilt's samples and typed report records that serialise to
    /// report.json's blocks with their field names (align's CLI writes nothing else).
    /// </summary>
    [Fact]
    public void RunReturnsTheDualTheSamplesAndTheReportBlocks()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var network = sessions.Denoiser(model);
        var constraints = new[] { Parse("direction:{dir}/e0.npy>=1") };
        var iterates = new List<DualIterate>();
        var result = ConstrainedAlignment.Run(network, model.DataRange, Sampler.Create("ddim", model.Config, 20), constraints,
            new ConstrainedSettings { SamplesPerIteration = 500, Seed = 5, FinalMode = KlTiltMode.Fast }, new GenerationRequest { Count = 300, BatchSize = 100, Seed = 1 },
            new Progress(iterates.Add));
        Assert.Equal(result.Dual.Trace, iterates);
        Assert.NotNull(result.Final);
        Assert.Equal(300, result.Final.Result.Samples.Count);
        Assert.Equal(result.Dual.Theta, result.Final.Result.Theta);
        var block = IO.ReportJson.ToNode(result.Report).AsObject();
        Assert.Equal(["method", "constraints", "converged", "infeasible_constraint", "kl_divergence", "trace", "network_evaluations"], block.Select(p => p.Key));
        Assert.Equal(["text", "threshold", "base_mean", "base_std", "multiplier", "fresh_mean", "fresh_standard_error", "fresh_slack", "met"],
                     block["constraints"]![0]!.AsObject().Select(p => p.Key));
        Assert.Equal(["iteration", "mu", "expected", "standard_errors", "slacks", "kl_divergence"], block["trace"]![0]!.AsObject().Select(p => p.Key));
        Assert.Equal("newton", (string?)block["method"]);
        Assert.Null(block["infeasible_constraint"]);
        var final = IO.ReportJson.ToNode(result.Final.Report).AsObject();
        Assert.Equal("fast", (string?)final["mode"]);
        Assert.NotNull(final["drifting"]);
    }

    private sealed class Progress(Action<DualIterate> report) : IProgress<DualIterate>
    {
        public void Report(DualIterate value) => report(value);
    }

    private sealed class Reported<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }

    /// <summary>Counts network calls (none of the dual's may happen on a resumed run).</summary>
    private sealed class CountingDenoiser(IDenoiser inner) : IDenoiser
    {
        public int Calls;
        public IReadOnlyList<int> SampleShape => inner.SampleShape;
        public int SampleSize => inner.SampleSize;
        public NoiseSchedule Schedule => inner.Schedule;

        public void PredictNoise(ReadOnlySpan<float> x, int batchSize, double timestep, Span<float> noise)
        {
            Interlocked.Increment(ref Calls);
            inner.PredictNoise(x, batchSize, timestep, noise);
        }
    }

    /// <summary>
    /// Issue #16: a constrained Run cancelled once its dual is kept and the final tilt's first batch is saved resumes
    /// from its checkpoint: the same θ, report block and samples as an uninterrupted run, no dual iterate solved again,
    /// and fewer network calls than the final tilt alone costs (its finished batch is reused).
    /// </summary>
    [Fact]
    public void RunResumedFromItsCheckpointDoesNotSolveTheDualAgain()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var network = sessions.Denoiser(model);
        var sampler = Sampler.Create("ddim", model.Config, 20);
        var constraints = new[] { Parse("direction:{dir}/e0.npy>=1") };
        var settings = new ConstrainedSettings { SamplesPerIteration = 300, Seed = 5, FinalMode = KlTiltMode.Fast };
        GenerationRequest Request(CancellationToken token = default) => new() { Count = 300, BatchSize = 100, Seed = 1, Cancellation = token };
        var whole = ConstrainedAlignment.Run(network, model.DataRange, sampler, constraints, settings, Request());
        Assert.False(whole.Resumed);
        var finalAlone = new CountingDenoiser(network);
        FinalTilt.Sample(finalAlone, model.DataRange, sampler, whole.Dual.Theta, KlTiltMode.Fast, null, Request(), null);

        string dir = TestSupport.TempDirectory();
        const string fingerprint = "{\"test\":\"constrained resume\"}";
        using (var source = new CancellationTokenSource())
        {
            var first = BatchCheckpoint.Start(dir, fingerprint);
            Assert.ThrowsAny<OperationCanceledException>(() => ConstrainedAlignment.Run(network, model.DataRange, sampler, constraints, settings, Request(source.Token),
                progress: new Reported<GenerationProgress>(p => { if (p.SamplesDone > 0) source.Cancel(); }), checkpoint: first));
        }

        var counting = new CountingDenoiser(network);
        var iterates = new List<DualIterate>();
        ConstrainedResult? solved = null;
        var resumed = ConstrainedAlignment.Run(counting, model.DataRange, sampler, constraints, settings, Request(), new Progress(iterates.Add),
            checkpoint: BatchCheckpoint.Resume(dir, fingerprint), solved: new Reported<ConstrainedResult>(d => solved = d));
        Assert.True(resumed.Resumed);
        Assert.Same(resumed.Dual, solved);
        Assert.Empty(iterates);
        Assert.Equal(whole.Dual.Theta, resumed.Dual.Theta);
        Assert.Equal(whole.Dual.Mu, resumed.Dual.Mu);
        Assert.Equal(whole.Dual.NetworkEvaluations, resumed.Dual.NetworkEvaluations);
        Assert.Equal(ReportJson.ToNode(whole.Report).ToJsonString(), ReportJson.ToNode(resumed.Report).ToJsonString());
        Assert.Equal(whole.Final!.Result.Samples.Samples, resumed.Final!.Result.Samples.Samples);
        output.WriteLine($"resumed: {counting.Calls} network calls; the final tilt alone {finalAlone.Calls}, the dual {whole.Dual.NetworkEvaluations} evaluations");
        Assert.InRange(counting.Calls, 1, finalAlone.Calls - 1);
    }

    /// <summary>The dual's checkpoint note round-trips every double exactly, NaN and ±∞ included, and θ's floats.</summary>
    [Fact]
    public void TheDualsNoteRoundTripsExactly()
    {
        string dir = TestSupport.TempDirectory();
        var checkpoint = BatchCheckpoint.Start(dir, "{}");
        var iterate = new DualIterate(0, [0.1 + 0.2], [double.NaN], [double.PositiveInfinity], [double.NegativeInfinity], 1.0 / 3);
        var note = new ConstrainedNote(DualMethod.ProjectedAscent, [Math.PI], [0.1f, float.Epsilon, -1e-30f], [Math.E], [double.NaN], [5e-324],
                                       [iterate], false, "x>=1", iterate with { Iteration = 1 }, 12345678901);
        SolutionNote.Write(checkpoint, note);
        var back = SolutionNote.Read<ConstrainedNote>(BatchCheckpoint.Resume(dir, "{}"))!;
        Assert.Equal(note.Theta, back.Theta);
        Assert.Equal(note.Mu, back.Mu);
        Assert.Equal(note.BaseMeans, back.BaseMeans);   // NaN equals NaN in xUnit's double comparison
        Assert.Equal(note.BaseStds, back.BaseStds);
        Assert.Equal(note.Trace[0].Expected, back.Trace[0].Expected);
        Assert.Equal(note.Trace[0].StandardErrors, back.Trace[0].StandardErrors);
        Assert.Equal(note.Trace[0].Slacks, back.Trace[0].Slacks);
        Assert.Equal(note.Trace[0].KlDivergence, back.Trace[0].KlDivergence);
        Assert.Equal(note.Check.Iteration, back.Check.Iteration);
        Assert.Equal((note.Method, note.Converged, note.Infeasible, note.NetworkEvaluations), (back.Method, back.Converged, back.Infeasible, back.NetworkEvaluations));
        Assert.Null(SolutionNote.Read<ConstrainedNote>(BatchCheckpoint.Start(TestSupport.TempDirectory(), "{}")));
    }

    [Theory]
    [InlineData("brightness>=0.2", Relation.AtLeast, 0.2, false)]
    [InlineData("brightness<=mean-0.5std", Relation.AtMost, -0.5, true)]
    [InlineData("brightness==mean", Relation.Equal, 0, true)]
    [InlineData("brightness=1e-1", Relation.Equal, 0.1, false)]
    public void ConstraintSyntax(string text, Relation relation, double value, bool relative)
    {
        var c = Constraint.Parse(text, [2], null);
        Assert.Equal(relation, c.Relation);
        Assert.Equal(new Threshold(value, relative), c.Threshold);
    }

    [Theory]
    [InlineData("brightness>0.2")]
    [InlineData("brightness>=mean+std")]
    [InlineData("brightness>=lots")]
    [InlineData("ramp:brightness,0,1>=0.5")]
    public void MalformedConstraintsAreClearErrors(string text)
    {
        var e = Assert.Throws<ConfigException>(() => Constraint.Parse(text, [2], null));
        Assert.Equal("constraint", e.Parameter);
        Assert.StartsWith($"constraint '{text}'", e.Message);
    }

    /// <summary>DPO on the tilt family recovers a planted θ* from Bradley–Terry pairs drawn with it.</summary>
    [Fact]
    public void PreferencePairsRecoverAPlantedTilt()
    {
        const int n = 4000;
        double[] planted = [1.2, -0.8];
        var random = new Random(11);
        var (a, b) = (Draw(random, n), Draw(random, n));
        var preferred = new float[2 * n];
        var rejected = new float[2 * n];
        int bayes = 0;
        for (int i = 0; i < n; i++)
        {
            double margin = planted[0] * (a[2 * i] - b[2 * i]) + planted[1] * (a[2 * i + 1] - b[2 * i + 1]);
            bool aWins = random.NextDouble() < 1 / (1 + Math.Exp(-margin));
            (var w, var l) = aWins ? (a, b) : (b, a);
            Array.Copy(w, 2 * i, preferred, 2 * i, 2);
            Array.Copy(l, 2 * i, rejected, 2 * i, 2);
            if (aWins == margin > 0 && i >= n * 0.8) bayes++;
        }
        var fit = PreferenceAlignment.FitPairs(preferred, rejected, 2, beta: 1, l2: 1e-4);
        output.WriteLine($"θ̂ = ({fit.Theta[0]:F3}, {fit.Theta[1]:F3}) vs ({planted[0]}, {planted[1]}); held-out accuracy {fit.HeldOutAccuracy:F3} (Bayes {bayes / (0.2 * n):F3})");
        // Logistic-regression standard error at this n and spread of x_w − x_l (≈ 2.9 per coordinate): ≈ 0.04; allow 4 se.
        Assert.InRange(fit.Theta[0], planted[0] - 0.16, planted[0] + 0.16);
        Assert.InRange(fit.Theta[1], planted[1] - 0.16, planted[1] + 0.16);
        Assert.InRange(fit.HeldOutAccuracy, bayes / (0.2 * n) - 0.04, 1);
    }

    [Fact]
    public void UnpairedLabelsRecoverAPlantedTiltAndReference()
    {
        const int n = 4000;
        double[] planted = [0.9, 0.6];
        const double reference = 0.5;
        var random = new Random(12);
        var x = Draw(random, n);
        var labels = Enumerable.Range(0, n).Select(i => random.NextDouble() < 1 / (1 + Math.Exp(-(planted[0] * x[2 * i] + planted[1] * x[2 * i + 1] - reference)))).ToArray();
        var fit = PreferenceAlignment.FitUnpaired(x, labels, 2, beta: 1, l2: 1e-4);
        output.WriteLine($"θ̂ = ({fit.Theta[0]:F3}, {fit.Theta[1]:F3}), z0 = {fit.Intercept:F3}");
        Assert.InRange(fit.Theta[0], planted[0] - 0.2, planted[0] + 0.2);
        Assert.InRange(fit.Theta[1], planted[1] - 0.2, planted[1] + 0.2);
        Assert.InRange(fit.Intercept, reference - 0.25, reference + 0.25);
    }

    /// <summary>Draws from the gmm2d mixture directly (the preference fit needs samples, not the diffusion model).</summary>
    private static float[] Draw(Random random, int n)
    {
        var m = ToyModels.Gmm2d;
        var x = new float[2 * n];
        for (int i = 0; i < n; i++)
        {
            double u = random.NextDouble(), acc = 0;
            int k = 0;
            while (k < m.Components - 1 && u > (acc += m.Weights[k])) k++;
            for (int j = 0; j < 2; j++)
                x[2 * i + j] = (float)(m.Means[k][j] + m.Stds[k] * Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
        }
        return x;
    }
}

/// <summary>Distributional objectives by dual averaging (DESIGN §5) against the exact fixed point on gmm2d.</summary>
public class DistributionalTests(ITestOutputHelper output, ModelSessions sessions) : IClassFixture<ModelSessions>
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void DualAveragingReachesTheExactFixedPoint(bool exactIterates)
    {
        double[] target = [1.5, 1.5];
        const double beta = 1.0;
        // Exact: u = −(2/β)(m(u) − t) with m(u) the tilted mixture's mean; Newton with J = I + (2/β)Cov(u).
        var exact = new double[2];
        for (int i = 0; i < 100; i++)
        {
            var q = ToyModels.Gmm2d.Tilted(exact);
            var m = q.Mean();
            var c = q.Covariance();
            double f0 = exact[0] + 2 / beta * (m[0] - target[0]), f1 = exact[1] + 2 / beta * (m[1] - target[1]);
            double j00 = 1 + 2 / beta * c[0], j01 = 2 / beta * c[1], j11 = 1 + 2 / beta * c[3], det = j00 * j11 - j01 * j01;
            exact[0] -= (j11 * f0 - j01 * f1) / det;
            exact[1] -= (j00 * f1 - j01 * f0) / det;
        }
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        var features = new FeatureReward("moments", [1f, 0f, 0f, 1f], 2, FeatureFunction.Parse("sq-dist:1.5,1.5", 2));
        var result = DistributionalAlignment.Solve(denoiser, Sampler.Create("ddim", model.Config, 50), features,
            new DualAveragingSettings { Beta = beta, SamplesPerIteration = 1000, MaxIterations = 60, Seed = 2, Exact = exactIterates ? new ExactTiltSettings() : null });
        foreach (var it in result.Trace.TakeLast(3))
            output.WriteLine($"{it.Iteration}: u ({it.U[0]:F4}, {it.U[1]:F4}), m ({it.Moments[0]:F4}, {it.Moments[1]:F4}), objective {it.Objective:F4}, Δθ {it.ThetaChange:F4}");
        output.WriteLine($"u = ({result.U[0]:F4}, {result.U[1]:F4}), exact ({exact[0]:F4}, {exact[1]:F4}); {result.Trace.Count} iterates");
        // Each iterate's moment estimate has se ≈ 1.4/√1000 ≈ 0.045; u is −(2/β)× a weighted average of many of them, whose
        // weights sum to at least the last ~third of the iterates: allow 4 × (2/β) × 0.045 / √(iterates/3).
        double tolerance = 4 * 2 / beta * 0.045 / Math.Sqrt(result.Trace.Count / 3.0) + 0.02;
        Assert.InRange(result.U[0], exact[0] - tolerance, exact[0] + tolerance);
        Assert.InRange(result.U[1], exact[1] - tolerance, exact[1] + tolerance);
        var trace = result.Trace;
        Assert.True(trace[^1].Objective < trace[0].Objective, "the objective decreases");
    }
}
