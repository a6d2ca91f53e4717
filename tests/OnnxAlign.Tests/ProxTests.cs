using MathNet.Numerics.LinearAlgebra;
using OnnxAlign.Alignment.Prox;
using OnnxAlign.Core;
using OnnxAlign.Rewards;

namespace OnnxAlign.Tests;

/// <summary>The Wasserstein prox T(x) = argmax_y r(y) − λc(x, y) (DESIGN §3) against closed forms and brute force.</summary>
public class ProxTests
{
    private static readonly int[] Shape = [1, 4, 4];
    private const int D = 16;

    private static float[] RandomSample(int seed, double range = 0.8)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, D).Select(_ => (float)(range * (2 * random.NextDouble() - 1))).ToArray();
    }

    private static float[] RandomFeatures(int seed, int k)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, k * D).Select(_ => (float)(random.NextDouble() - 0.3) / D).ToArray();
    }

    private static (float[] Y, ProxResult Result) Prox(Reward reward, ProxSettings settings, float[] x)
    {
        var y = new float[x.Length];
        var result = new ProxOracle(reward, settings).Solve(x, y);
        return (y, result);
    }

    private static double Objective(Reward reward, ProxSettings settings, float[] x, double[] y) =>
        reward.Evaluate(y) - settings.Lambda * settings.Cost.Evaluate(x, y);

    [Fact]
    public void Linear_reward_moves_by_a_over_lambda_and_clamps_exactly()
    {
        var reward = RewardSpec.Parse("brightness", Shape, null);
        var x = RandomSample(1);
        var (y, result) = Prox(reward, new ProxSettings { Lambda = 0.5 }, x);
        for (int i = 0; i < D; i++) Assert.Equal(x[i] + (1.0 / D) / 0.5, y[i], 6);
        Assert.Equal("linear-closed-form", result.Method);
        // The closed form has no gap; the certificate only carries the rounding of y to float (≈ 1e-8 here).
        Assert.InRange(result.CertifiedGap, 0, 1e-6);
        Assert.False(result.BoxActive);

        var (clamped, boxed) = Prox(reward, new ProxSettings { Lambda = 0.05, Box = ValueBox.Pixels }, x);
        for (int i = 0; i < D; i++) Assert.Equal(Math.Min(1, x[i] + (1.0 / D) / 0.05), clamped[i], 6);
        Assert.True(boxed.BoxActive);

        var weights = Enumerable.Range(0, D).Select(i => 0.5f + i).ToArray();
        var (weighted, _) = Prox(reward, new ProxSettings { Lambda = 0.5, Cost = new TransportCost(weights) }, x);
        for (int i = 0; i < D; i++) Assert.Equal(x[i] + (1.0 / D) / (0.5 * weights[i]), weighted[i], 6);
    }

    /// <summary>r(y) = −‖Ay − t‖² is concave quadratic: the optimum solves (2AᵀA + λW)y = 2Aᵀt + λWx. k = 2 goes
    /// through the k-dim Newton reduction, k = 5 through L-BFGS in full dimension.</summary>
    [Theory]
    [InlineData(2, "low-rank-newton")]
    [InlineData(5, "lbfgs")]
    public void Concave_quadratic_reward_matches_its_linear_system(int k, string method)
    {
        var a = RandomFeatures(7, k);
        var target = Enumerable.Range(0, k).Select(j => 0.3 - 0.1 * j).ToArray();
        var reward = new FeatureReward("test", a, k, FeatureFunction.Quadratic.NegativeSquaredDistance(target));
        var weights = Enumerable.Range(0, D).Select(i => 1f + 0.25f * (i % 3)).ToArray();
        var settings = new ProxSettings { Lambda = 0.01, Cost = new TransportCost(weights), Tolerance = 1e-10 };
        var x = RandomSample(3);
        var (y, result) = Prox(reward, settings, x);
        Assert.Equal(method, result.Method);

        var matA = Matrix<double>.Build.Dense(k, D, (j, i) => a[j * D + i]);
        var w = Matrix<double>.Build.DenseOfDiagonalArray(weights.Select(v => (double)v).ToArray());
        var xv = Vector<double>.Build.Dense(x.Select(v => (double)v).ToArray());
        var expected = (2 * matA.TransposeThisAndMultiply(matA) + settings.Lambda * w)
            .Solve(2 * matA.TransposeThisAndMultiply(Vector<double>.Build.Dense(target)) + settings.Lambda * (w * xv));
        for (int i = 0; i < D; i++) Assert.Equal(expected[i], y[i], 4);
        Assert.True(result.RewardAfter > result.RewardBefore);
        Assert.True(result.CertifiedGap <= 1e-10 * Math.Max(1, Math.Abs(result.Objective)) + 1e-12, $"gap {result.CertifiedGap}");
    }

    /// <summary>Ramp (k = 1) and bump (k = 2) are not concave: branch-and-bound must find the global optimum of the
    /// k-dim problem V(z) = f(z) − (λ/2)(z − z₀)ᵀG⁻¹(z − z₀), checked on a fine grid. The grid maximum can only be
    /// below the true one, so the reported objective must reach it within the certified gap.</summary>
    [Theory]
    [InlineData("ramp", 1, 0.02)]
    [InlineData("ramp", 1, 0.002)]
    [InlineData("bump", 2, 0.05)]
    [InlineData("bump", 2, 0.004)]
    public void Branch_and_bound_finds_the_brute_force_optimum_of_non_concave_rewards(string name, int k, double lambda)
    {
        var a = RandomFeatures(11, k);
        FeatureFunction f = name == "ramp" ? new FeatureFunction.Ramp(0.1, 0.3) : new FeatureFunction.Bump([0.2, -0.1], 0.05);
        var reward = new FeatureReward("test", a, k, f);
        var settings = new ProxSettings { Lambda = lambda };
        foreach (int seed in new[] { 1, 2, 3 })
        {
            var x = RandomSample(seed);
            var (y, result) = Prox(reward, settings, x);
            Assert.Equal("lipschitz-branch-and-bound", result.Method);
            Assert.True(result.CertifiedGap <= settings.Tolerance * Math.Max(1, Math.Abs(result.Objective)) * 1.0001, $"gap {result.CertifiedGap}");

            var geometry = Geometry(a, k);
            var z0 = Features(a, k, x);
            double GridValue(double[] z)
            {
                var d = z.Select((v, j) => v - z0[j]).ToArray();
                return f.Value(z) - lambda * 0.5 * Quadratic(geometry.Inverse(), d);
            }
            double bestGrid = double.NegativeInfinity;
            int n = k == 1 ? 200_001 : 1501;
            double half = k == 1 ? 1.0 : 0.6;
            var z = new double[k];
            if (k == 1)
                for (int i = 0; i < n; i++) { z[0] = z0[0] - half + 2 * half * i / (n - 1); bestGrid = Math.Max(bestGrid, GridValue(z)); }
            else
                for (int i = 0; i < n; i++)
                    for (int j = 0; j < n; j++)
                    {
                        z[0] = z0[0] - half + 2 * half * i / (n - 1);
                        z[1] = z0[1] - half + 2 * half * j / (n - 1);
                        bestGrid = Math.Max(bestGrid, GridValue(z));
                    }
            Assert.True(result.Objective >= bestGrid - result.CertifiedGap - 1e-9, $"seed {seed}: objective {result.Objective} < grid {bestGrid} − gap {result.CertifiedGap}");
            // And it is achieved: the objective of the returned sample is what was reported.
            Assert.Equal(Objective(reward, settings, x, y.Select(v => (double)v).ToArray()), result.Objective, 9);
        }
    }

    /// <summary>With the value box active, the boxed problem is solved directly: for k = 1 the cheapest boxed transport
    /// to feature value z is y = clamp(x + νa) with ν found by bisection, so V(z) is brute-forced on a grid.</summary>
    [Fact]
    public void Boxed_branch_and_bound_matches_brute_force_over_the_boxed_transport()
    {
        var a = Enumerable.Range(0, D).Select(i => (float)(0.5 + (i % 4)) / D).ToArray();
        var f = new FeatureFunction.Ramp(0.2, 0.45);
        var reward = new FeatureReward("test", a, 1, f);
        var settings = new ProxSettings { Lambda = 0.05, Box = ValueBox.Pixels };
        var x = RandomSample(5, 0.95);
        var (y, result) = Prox(reward, settings, x);
        Assert.True(result.BoxActive);
        Assert.All(y, v => Assert.InRange(v, -1f, 1f));

        double Boxed(double z)
        {
            double lo = -1e6, hi = 1e6;
            double[] yy = new double[D];
            for (int it = 0; it < 200; it++)
            {
                double nu = (lo + hi) / 2, s = 0;
                for (int i = 0; i < D; i++) { yy[i] = Math.Clamp(x[i] + nu * a[i], -1, 1); s += a[i] * yy[i]; }
                if (s < z) lo = nu; else hi = nu;
            }
            double feature = 0;
            for (int i = 0; i < D; i++) feature += a[i] * yy[i];
            if (Math.Abs(feature - z) > 1e-9) return double.NegativeInfinity; // unreachable inside the box
            return f.Value([z]) - settings.Lambda * settings.Cost.Evaluate(x, yy);
        }
        double zMax = a.Sum(v => (double)v), best = double.NegativeInfinity;
        for (int i = 0; i <= 20_000; i++) best = Math.Max(best, Boxed(-zMax + 2 * zMax * i / 20_000));
        Assert.True(result.Objective >= best - result.CertifiedGap - 1e-9, $"objective {result.Objective} < grid {best}");
        Assert.True(result.Objective <= best + 1e-3, $"objective {result.Objective} above the brute-force optimum {best}");
    }

    public static TheoryData<string> AllStructures => ["linear", "newton", "lbfgs", "bnb", "bnb-boxed", "projected"];

    private static (Reward Reward, ProxSettings Settings) Problem(string structure, double lambda)
    {
        var settings = new ProxSettings { Lambda = lambda, Box = structure is "bnb-boxed" or "projected" ? ValueBox.Pixels : null };
        Reward reward = structure switch
        {
            "linear" => RewardSpec.Parse("brightness", Shape, null),
            "newton" => new FeatureReward("t", RandomFeatures(2, 2), 2, FeatureFunction.Quadratic.NegativeSquaredDistance([0.5, -0.2])),
            "lbfgs" or "projected" => new FeatureReward("t", RandomFeatures(3, 4), 4, new FeatureFunction.LogSoftmax(4, 1)),
            _ => new FeatureReward("t", RandomFeatures(4, 2), 2, new FeatureFunction.Bump([0.3, 0.1], 0.1)),
        };
        return (reward, settings);
    }

    [Theory]
    [MemberData(nameof(AllStructures))]
    public void Infinite_price_of_moving_leaves_samples_unchanged(string structure)
    {
        var (reward, settings) = Problem(structure, 1e12);
        var x = RandomSample(9);
        var (y, result) = Prox(reward, settings, x);
        for (int i = 0; i < D; i++) Assert.Equal(x[i], y[i], 6);
        Assert.Equal(result.RewardBefore, result.RewardAfter, 6);
    }

    /// <summary>No random perturbation (at scales from 1e-4 to 1, kept in the box) beats the returned optimum by more than
    /// the certified gap.</summary>
    [Theory]
    [MemberData(nameof(AllStructures))]
    public void Optimum_beats_random_perturbations(string structure)
    {
        var (reward, settings) = Problem(structure, structure is "projected" or "bnb-boxed" ? 0.002 : 0.02);
        var x = RandomSample(13, structure is "projected" or "bnb-boxed" ? 0.95 : 0.8);
        var (y, result) = Prox(reward, settings, x);
        if (structure is "projected") Assert.Equal("projected-gradient-boxed", result.Method);
        if (structure is "bnb-boxed") Assert.True(result.BoxActive);
        var random = new Random(17);
        var candidate = new double[D];
        for (int trial = 0; trial < 1000; trial++)
        {
            double scale = Math.Pow(10, -4 + 4 * random.NextDouble());
            for (int i = 0; i < D; i++)
            {
                double v = y[i] + scale * (2 * random.NextDouble() - 1);
                candidate[i] = settings.Box is { } box ? box.Clamp(v) : v;
            }
            double value = Objective(reward, settings, x, candidate);
            Assert.True(value <= result.Objective + result.CertifiedGap + 1e-9, $"trial {trial} (scale {scale:g3}): {value} > {result.Objective} + {result.CertifiedGap}");
        }
    }

    [Fact]
    public void Stage_is_parallel_and_equals_sample_by_sample()
    {
        var reward = new FeatureReward("t", RandomFeatures(4, 1), 1, new FeatureFunction.Ramp(0.1, 0.4));
        var oracle = new ProxOracle(reward, new ProxSettings { Lambda = 0.01, Box = ValueBox.Pixels });
        var samples = Enumerable.Range(0, 24).SelectMany(s => RandomSample(100 + s)).ToArray();
        var parallel = ProxStage.Apply(oracle, samples);
        var serial = ProxStage.Apply(oracle, samples, maxParallelism: 1);
        Assert.Equal(serial.Samples, parallel.Samples);
        Assert.Equal(24, parallel.Results.Length);
        Assert.True(parallel.BoxActiveCount > 0);
        Assert.All(parallel.Results, r => Assert.True(r.CertifiedGap <= 1e-4 * Math.Max(1, Math.Abs(r.Objective)) * 1.0001));
    }

    /// <summary>
    /// The library's Wasserstein entry point is the model's samples moved by the prox stage (the two steps generate
    /// --align w2 runs), its report names each sample by its run-wide index (a shard's block), and a cancelled stage stops.
    /// </summary>
    [Fact]
    public void Wasserstein_alignment_is_the_models_samples_moved_by_the_prox_and_reports_them()
    {
        var model = OnnxAlign.Model.DiffusionModel.Locate(TestSupport.Toy("gmm-image"));
        using var network = model.OpenDenoiser();
        var sampler = OnnxAlign.Sampling.Sampler.Create("ddpm", model.Config, 8);
        var reward = RewardSpec.Parse("channel-mean:0", network.SampleShape, model.Directory);
        var oracle = new ProxOracle(reward, new ProxSettings { Lambda = 0.5, Box = ValueBox.Pixels });
        var request = new OnnxAlign.Sampling.GenerationRequest { Count = 9, BatchSize = 4, Seed = 2, Shard = new OnnxAlign.Sampling.Shard(1, 2) };
        var run = WassersteinAlignment.Run(network, sampler, oracle, request);

        var drawn = OnnxAlign.Sampling.Generation.Run(network, sampler, request);
        Assert.Equal(drawn.Samples, run.Base.Samples);
        Assert.Equal(ProxStage.Apply(oracle, drawn.Samples).Samples, run.Aligned.Samples);
        Assert.Equal(drawn.Indices, run.Report.PerSample.Select(p => p.Index));
        Assert.Equal(run.Aligned.Results.Average(r => r.RewardAfter), run.Report.RewardAfter.Mean, 12);
        Assert.True(run.Report.RewardAfter.Mean > run.Report.RewardBefore.Mean);
        var json = OnnxAlign.IO.ReportJson.ToNode(run.Report);
        Assert.Equal("w2-prox", (string?)json["method"]);
        Assert.NotNull(json["per_sample"]![0]!["certified_gap"]);
        Assert.NotNull(json["samples_above_gap_tolerance"]);

        using var cancel = new CancellationTokenSource();
        cancel.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => ProxStage.Apply(oracle, drawn.Samples, cancellation: cancel.Token));
    }

    [Fact]
    public void Rewards_without_an_exact_prox_are_refused_with_what_is_supported()
    {
        var reward = new FeatureReward("t", RandomFeatures(1, 4), 4, new FeatureFunction.Bump([0, 0, 0, 0], 0.1));
        var e = Assert.Throws<ArgumentException>(() => new ProxOracle(reward, new ProxSettings { Lambda = 1 }));
        Assert.Contains("Lipschitz f with k ≤ 3", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => new ProxOracle(reward, new ProxSettings { Lambda = 0 }));
    }

    private sealed record GeometryMatrix(Matrix<double> G)
    {
        public double[] Inverse() => G.Inverse().ToRowMajorArray();
    }

    private static GeometryMatrix Geometry(float[] a, int k)
    {
        var m = Matrix<double>.Build.Dense(k, D, (j, i) => a[j * D + i]);
        return new GeometryMatrix(m * m.Transpose());
    }

    private static double[] Features(float[] a, int k, float[] x) =>
        Enumerable.Range(0, k).Select(j => Enumerable.Range(0, D).Sum(i => (double)a[j * D + i] * x[i])).ToArray();

    private static double Quadratic(double[] m, double[] u)
    {
        int k = u.Length;
        double s = 0;
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) s += u[i] * m[i * k + j] * u[j];
        return s;
    }
}
