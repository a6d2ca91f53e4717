using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Model;
using OnnxAlign.ModelForge;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Tests;

/// <summary>Rewards without structure (issue #18, DESIGN §8): tilts as proposals, exact weights, against quadrature.</summary>
public sealed class BlackBoxTests(ModelSessions sessions) : IClassFixture<ModelSessions>
{
    /// <summary>r(x) = 1.5·x₁ + 0.6·cos(2·x₀): non-linear, neither convex nor concave, no declared structure.</summary>
    private sealed class WavyReward() : Reward("test:wavy", 2)
    {
        public override double Evaluate(ReadOnlySpan<float> x) => 1.5 * x[1] + 0.6 * Math.Cos(2 * x[0]);
        public override double Evaluate(ReadOnlySpan<double> x) => 1.5 * x[1] + 0.6 * Math.Cos(2 * x[0]);
        public override double Gradient(ReadOnlySpan<double> x, Span<double> gradient) => throw new NotSupportedException();
    }

    /// <summary>E_π[r] and E_π[x₁] for π ∝ p_gmm2d·e^{r/λ} by quadrature on a fine grid (the mixture's density is known).</summary>
    private static (double Reward, double X1) Quadrature(Reward reward, double lambda)
    {
        const int points = 801;
        const double low = -8, high = 8, h = (high - low) / (points - 1);
        double mass = 0, rSum = 0, xSum = 0;
        var x = new double[2];
        for (int i = 0; i < points; i++)
            for (int j = 0; j < points; j++)
            {
                x[0] = low + i * h;
                x[1] = low + j * h;
                double r = reward.Evaluate(x);
                double w = Math.Exp(ToyModels.Gmm2d.LogDensity(x) + r / lambda);
                mass += w;
                rSum += w * r;
                xSum += w * x[1];
            }
        return (rSum / mass, xSum / mass);
    }

    private KlAlignmentResult Run(BlackBoxMethod method, Reward reward, double lambda, int count, long seed, double maxParticles = 16, int steps = 100)
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var network = sessions.Denoiser(model);
        var sampler = Sampler.Create("ddpm", model.Config, steps);
        var settings = new KlAlignmentSettings
        {
            BlackBox = new BlackBoxSettings { Method = method, Fit = new TiltFitSettings { Features = 2, PilotSamples = 256 } },
            Exact = new ExactTiltSettings { MaxParticlesPerSample = maxParticles, TargetEssPerSample = 100, Smc = new SmcSettings { ParticlesPerSystem = 128 } },
        };
        return KlAlignment.Run(network, null, sampler, reward, lambda, settings, new GenerationRequest { Count = count, BatchSize = 256, Seed = seed });
    }

    [Fact]
    public void ARewardWithoutStructureIsSampledByTheBlackBoxMethods()
    {
        using var reward = new WavyReward();
        Assert.True(reward.IsBlackBox);
        Assert.Equal(KlAlgorithm.BlackBox, KlAlignment.Choose(reward, 0.5));
        Assert.Equal("mode", Assert.Throws<ConfigException>(() => KlAlignment.Choose(reward, 0.5, KlTiltMode.Fast)).Parameter);
        Assert.False(new LinearReward("a", [1f, 0f]).IsBlackBox);
        foreach (var method in Enum.GetValues<BlackBoxMethod>())
            Assert.Equal(method, BlackBoxAlignment.Parse(BlackBoxAlignment.Name(method)));
        Assert.Null(BlackBoxAlignment.Parse("nope"));
    }

    /// <summary>
    /// tilt-SMC and tilt-IS on the non-linear reward agree with quadrature of the mixture's density within 4 standard
    /// errors (plus 0.01 for the grid), and the fitted tilt beats SIR's ESS at the same particles. All 1000 DDPM steps, so
    /// that the sampler's own law (which the methods target) is the mixture's: at 100 steps every method, SIR included,
    /// gives E[r] ≈ 1.89 against the mixture's 2.04 (measured), the sampler's discretisation, not the methods'.
    /// </summary>
    [Fact]
    [Trait("Category", "Slow")]
    public void TiltSmcAndTiltIsMatchQuadratureAndBeatImportanceResampling()
    {
        using var reward = new WavyReward();
        const double lambda = 0.5;
        var (truthR, truthX1) = Quadrature(reward, lambda);
        var ess = new Dictionary<BlackBoxMethod, double>();
        foreach (var method in new[] { BlackBoxMethod.TiltSmc, BlackBoxMethod.TiltImportance, BlackBoxMethod.ImportanceResampling })
        {
            var run = Run(method, reward, lambda, count: 256, seed: 21, steps: 1000);
            var particles = run.Exact!.Particles;
            ess[method] = particles.EffectiveSampleSize;
            var rewards = reward.EvaluateBatch(particles.Samples);
            var r = particles.Mean(rewards);
            var x1 = particles.Mean(Enumerable.Range(0, particles.Count).Select(i => (double)particles.Samples[i * 2 + 1]).ToArray());
            Assert.True(Math.Abs(r.Value - truthR) < 4 * r.StandardError + 0.01, $"{method}: E[r] {r.Value:F4} ± {r.StandardError:F4}, quadrature {truthR:F4}");
            Assert.True(Math.Abs(x1.Value - truthX1) < 4 * x1.StandardError + 0.01, $"{method}: E[x1] {x1.Value:F4} ± {x1.StandardError:F4}, quadrature {truthX1:F4}");
            // log Z_π and KL(π‖p) from the run's weights against quadrature of the same law.
            Assert.Equal(method, run.BlackBox!.Method);
            Assert.True(run.Exact.KlDivergence.Value > 0);
            if (method != BlackBoxMethod.ImportanceResampling)
            {
                Assert.NotNull(run.BlackBox.Fit);
                Assert.True(run.BlackBox.RewardEvaluations > 0);
                // The proposal's scale was chosen among the settings' by the exact weights of a trial each.
                Assert.Equal(5, run.BlackBox.Fit!.ScaleTrials!.Count);
                Assert.Contains(run.BlackBox.Fit.Scale, new TiltFitSettings().Scales);
            }
        }
        Assert.True(ess[BlackBoxMethod.TiltImportance] > ess[BlackBoxMethod.ImportanceResampling],
                    $"tilt-IS ESS {ess[BlackBoxMethod.TiltImportance]:F0} vs SIR {ess[BlackBoxMethod.ImportanceResampling]:F0}");
        Assert.True(ess[BlackBoxMethod.TiltSmc] > ess[BlackBoxMethod.ImportanceResampling],
                    $"tilt-SMC ESS {ess[BlackBoxMethod.TiltSmc]:F0} vs SIR {ess[BlackBoxMethod.ImportanceResampling]:F0}");
    }

    /// <summary>The principal directions (from the smaller Gram matrix) are the leading right singular vectors of a full SVD, up to sign, orthonormal, with the largest component positive.</summary>
    [Theory]
    [InlineData(40, 300, 6)]    // n < d: the n × n Gram matrix
    [InlineData(200, 12, 5)]    // n ≥ d: the d × d covariance
    public void PrincipalDirectionsAreTheLeadingSingularVectors(int n, int d, int k)
    {
        var random = new Random(11);
        // Anisotropic data: coordinate j has scale 1/(1 + j/3), so the singular values are distinct.
        var samples = new float[n * d];
        for (int i = 0; i < n; i++) for (int j = 0; j < d; j++) samples[i * d + j] = (float)((random.NextDouble() - 0.5) / (1 + j / 3.0) + 0.3);
        var rows = BlackBoxAlignment.PrincipalDirections(samples, n, d, k);

        var centred = MathNet.Numerics.LinearAlgebra.Matrix<double>.Build.Dense(n, d, (i, j) => samples[i * d + j] - Enumerable.Range(0, n).Average(m => samples[m * d + j]));
        var svd = centred.Svd(computeVectors: true);
        for (int r = 0; r < k; r++)
        {
            var row = rows.AsSpan(r * d, d).ToArray().Select(v => (double)v).ToArray();
            double cosine = Enumerable.Range(0, d).Sum(j => row[j] * svd.VT[r, j]);
            Assert.True(Math.Abs(Math.Abs(cosine) - 1) < 1e-4, $"direction {r}: |cos| {Math.Abs(cosine)} (singular values {svd.S[r]:F4}, {svd.S[r + 1]:F4})");
            int largest = Enumerable.Range(0, d).MaxBy(j => Math.Abs(row[j]));
            Assert.True(row[largest] > 0, $"direction {r}: its largest component {largest} is {row[largest]} ({string.Join(", ", row.Select(v => v.ToString("F4")))})");
            for (int q = 0; q <= r; q++)
                Assert.Equal(q == r ? 1 : 0, Enumerable.Range(0, d).Sum(j => row[j] * rows[q * d + j]), 4);
        }
    }

    /// <summary>For a linear reward the regression returns the exact tilt θ = a/λ and DESIGN §8's weights e^{r/λ − ⟨θ,x⟩} are constant.</summary>
    [Fact]
    public void ForALinearRewardTheFittedTiltIsTheExactTiltAndTheWeightsAreConstant()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var network = sessions.Denoiser(model);
        var sampler = Sampler.Create("ddpm", model.Config, steps: 50);
        var linear = new LinearReward("test:linear", [0.6f, -0.8f], 0.25);
        using var blackBox = new Opaque(linear);
        const double lambda = 0.5;
        var settings = new TiltFitSettings { Features = 2, PilotRounds = 2, PilotSamples = 64, Ridge = 0, Scales = [1] };
        var fit = BlackBoxAlignment.FitTilt(network, null, sampler, blackBox, lambda, settings, new GenerationRequest { Count = 1, BatchSize = 64, Seed = 4 });
        Assert.Equal(settings.NetworkEvaluations(sampler), fit.NetworkEvaluations);   // what the CLI announces before the fit
        Assert.Equal(2 * 64 * 50 + 2 * 64 * 50, fit.NetworkEvaluations);
        var exact = linear.Tilt(lambda);
        for (int j = 0; j < 2; j++) Assert.Equal(exact[j], fit.Theta[j], 1e-4);
        Assert.Equal(1, fit.Scale);
        Assert.Single(fit.ScaleTrials!);
        Assert.All(fit.Rounds, r => Assert.True(r.ResidualStd < 1e-4, $"residual sd {r.ResidualStd}"));
        var samples = TestSupport.Generate(ExactTilt.FastTilt(network, fit.Theta, null), sampler, 256, seed: 8);
        var logW = Enumerable.Range(0, 256).Select(i => linear.Evaluate(samples.AsSpan(i * 2, 2)) / lambda
                                                        - (fit.Theta[0] * samples[i * 2] + fit.Theta[1] * samples[i * 2 + 1])).ToArray();
        Assert.True(logW.Max() - logW.Min() < 1e-3, $"log-weights spread {logW.Max() - logW.Min()}");
    }

    /// <summary>Best-of-N returns the best of N base draws; it reports no weights (it is not a sampler of π).</summary>
    [Fact]
    public void BestOfNKeepsTheLargestRewardOfItsDraws()
    {
        using var reward = new WavyReward();
        var best = Run(BlackBoxMethod.BestOfN, reward, 0.5, count: 32, seed: 2);
        Assert.Null(best.Exact);
        Assert.Equal(32, best.Samples.Count);
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var network = sessions.Denoiser(model);
        var draws = Generation.Run(network, Sampler.Create("ddpm", model.Config, steps: 100), new GenerationRequest { Count = 32 * 16, BatchSize = 256, Seed = 2 });
        var rewards = reward.EvaluateBatch(draws.Samples);
        var got = reward.EvaluateBatch(best.Samples.Samples);
        for (int i = 0; i < 32; i++) Assert.Equal(rewards.Skip(i * 16).Take(16).Max(), got[i], 1e-9);
    }

    /// <summary>Deterministic samplers: the baselines that weigh stochastic steps are refused naming the sampler.</summary>
    [Fact]
    public void MethodsThatWeighStochasticStepsRefuseADeterministicSampler()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var network = sessions.Denoiser(model);
        using var reward = new WavyReward();
        var sampler = Sampler.Create("ddim", model.Config, steps: 10);
        foreach (var method in new[] { BlackBoxMethod.TiltImportance, BlackBoxMethod.FeynmanKac, BlackBoxMethod.ImportanceResampling })
        {
            var error = Assert.Throws<ConfigException>(() => BlackBoxAlignment.Run(network, null, sampler, reward, 0.5, new BlackBoxSettings { Method = method },
                new ExactTiltSettings(), new GenerationRequest { Count = 4 }));
            Assert.Equal("sampler", error.Parameter);
        }
        // The default runs the noise-space SMC there (no tilt to fit).
        var run = BlackBoxAlignment.Run(network, null, sampler, reward, 0.5, new BlackBoxSettings(), new ExactTiltSettings { MaxParticlesPerSample = 4 },
                                        new GenerationRequest { Count = 8, Seed = 1 });
        Assert.Equal("noise-space-smc", run.Exact!.Method);
        Assert.Null(run.BlackBox!.Fit);
    }

    /// <summary>A structured reward hidden behind the black-box interface.</summary>
    private sealed class Opaque(Reward inner) : Reward("opaque:" + inner.Name, inner.Size)
    {
        public override double Evaluate(ReadOnlySpan<float> x) => inner.Evaluate(x);
        public override double Evaluate(ReadOnlySpan<double> x) => inner.Evaluate(x);
        public override double Gradient(ReadOnlySpan<double> x, Span<double> gradient) => inner.Gradient(x, gradient);
    }
}
