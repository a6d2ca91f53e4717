using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Evaluation;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;
using OnnxAlign.ModelForge;

namespace OnnxAlign.Tests;

/// <summary>The library's KL aligner (issue #16): the algorithm chosen from the reward's structure, and each choice runs the algorithm it names.</summary>
public sealed class KlAlignmentTests(ModelSessions sessions) : IClassFixture<ModelSessions>
{
    private static LinearReward Linear() => new("test:linear", [0.6f, 0.8f]);

    [Fact]
    public void TheRewardsStructurePicksTheAlgorithm()
    {
        Assert.Equal(KlAlgorithm.ExactTilt, KlAlignment.Choose(Linear(), 1));
        Assert.Equal(KlAlgorithm.FastTilt, KlAlignment.Choose(Linear(), 1, KlTiltMode.Fast));
        Assert.Equal(KlAlgorithm.HybridTilt, KlAlignment.Choose(Linear(), 1, KlTiltMode.Hybrid));
        Assert.Equal(KlAlgorithm.ExactReward, KlAlignment.Choose(MixtureTests.Gmm2dReward(1, "softplus:0.5"), 0.3));
        Assert.Equal(KlAlgorithm.TiltMixture, KlAlignment.Choose(MixtureTests.Gmm2dReward(2, "logsumexp:0.3"), 0.3, KlTiltMode.Fast));

        // A concave f has no exact KL algorithm: refused, naming the parameter, not a flag.
        var concave = Assert.Throws<ConfigException>(() => KlAlignment.Choose(MixtureTests.Gmm2dReward(1, "min"), 0.3));
        Assert.Equal("reward", concave.Parameter);
        Assert.Contains("concave", concave.Message);
        Assert.Equal("mode", Assert.Throws<ConfigException>(() => KlAlignment.Choose(MixtureTests.Gmm2dReward(1, "softplus:0.5"), 0.3, KlTiltMode.Hybrid)).Parameter);
        foreach (double bad in new[] { 0, -1, double.NaN, double.PositiveInfinity })
            Assert.Equal("lambda", Assert.Throws<ConfigException>(() => KlAlignment.Choose(Linear(), bad)).Parameter);
        Assert.Equal("lambda", Assert.Throws<ConfigException>(() => KlAlignment.TiltOf(Linear(), 1e-300)).Parameter);
    }

    /// <summary>The linear exact path is <see cref="ExactTilt.Sample"/> with the request's count, seed and NaN policy: the same samples.</summary>
    [Fact]
    public void ALinearRewardRunsTheExactTilt()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var network = sessions.Denoiser(model);
        var sampler = Sampler.Create("ddpm", model.Config, steps: 30);
        var reward = Linear();
        var request = new GenerationRequest { Count = 64, BatchSize = 64, Seed = 11 };
        var aligned = KlAlignment.Run(network, null, sampler, reward, 0.5, new KlAlignmentSettings(), request);
        var direct = ExactTilt.Sample(network, null, sampler, reward.Tilt(0.5), new ExactTiltSettings { Count = 64, Smc = new SmcSettings { Seed = 11 } });
        Assert.Equal(KlAlgorithm.ExactTilt, aligned.Algorithm);
        Assert.Equal(direct.Samples, aligned.Samples.Samples);
        Assert.Equal(direct.KlDivergence, aligned.Exact!.KlDivergence);
    }

    /// <summary>A convex low-rank reward is sampled by the mixture of tilts: its feature law matches the quadrature ground truth.</summary>
    [Fact]
    public void AConvexLowRankRewardRunsTheMixtureToItsGroundTruth()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var network = sessions.Denoiser(model);
        var sampler = Sampler.Create("ddim", model.Config, steps: 100);
        var reward = MixtureTests.Gmm2dReward(1, "softplus:0.5");
        const double lambda = 0.3;
        const int count = 2000;
        var aligned = KlAlignment.Run(network, null, sampler, reward, lambda, new KlAlignmentSettings { Mode = KlTiltMode.Fast },
                                      new GenerationRequest { Count = count, BatchSize = 256, Seed = 5 });
        Assert.Equal(KlAlgorithm.TiltMixture, aligned.Algorithm);
        Assert.Equal(count, aligned.Samples.Count);
        var truth = new FeatureGridLaw(ToyModels.Gmm2d, reward, z => reward.Function.Value(z) / lambda, -8, 8, 4001);
        double ks = Numerics.KolmogorovSmirnov(aligned.Mixture!.Features.Select(z => z[0]), v => truth.MarginalCdf(0, v));
        Assert.InRange(ks, 0, 1.95 / Math.Sqrt(count) + 0.01);
    }

    /// <summary>
    /// The exact mode samples π ∝ p·e^{f(Ax)/λ} by SMC with the potential f(Ax)/λ (DESIGN §8), p being this sampler's
    /// law: against self-normalised importance weighting of 40 000 base samples of the same sampler (a ground truth that
    /// does not assume the method), the weighted mean of the feature agrees within 4 combined standard errors.
    /// </summary>
    [Fact]
    public void AConvexLowRankRewardIsSampledExactlyBySmc()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var network = sessions.Denoiser(model);
        var sampler = Sampler.Create("ddpm", model.Config, steps: 50);
        var reward = MixtureTests.Gmm2dReward(1, "softplus:0.5");
        const double lambda = 0.3;
        var aligned = KlAlignment.Run(network, null, sampler, reward, lambda, new KlAlignmentSettings(),
                                      new GenerationRequest { Count = 2000, BatchSize = 256, Seed = 5 });
        Assert.Equal(KlAlgorithm.ExactReward, aligned.Algorithm);
        double Feature(ReadOnlySpan<float> x)
        {
            var one = new double[1];
            reward.Project(x, one);
            return one[0];
        }
        var particles = aligned.Exact!.Particles;
        var smc = particles.Mean(Enumerable.Range(0, particles.Count).Select(i => Feature(particles.Samples.AsSpan(i * 2, 2))).ToArray());

        var baseRun = Generation.Run(network, sampler, new GenerationRequest { Count = 40_000, BatchSize = 4000, Seed = 99 });
        var z = Enumerable.Range(0, 40_000).Select(i => Feature(baseRun.Samples.AsSpan(i * 2, 2))).ToArray();
        var logW = Enumerable.Range(0, z.Length).Select(i => reward.Evaluate(baseRun.Samples.AsSpan(i * 2, 2)) / lambda).ToArray();
        double max = logW.Max();
        var w = logW.Select(v => Math.Exp(v - max)).ToArray();
        double sum = w.Sum(), truth = w.Zip(z, (a, b) => a * b).Sum() / sum;
        // The delta-method standard error of a self-normalised estimate.
        double se = Math.Sqrt(w.Zip(z, (a, b) => a * a * (b - truth) * (b - truth)).Sum()) / sum;
        double ess = sum * sum / w.Sum(a => a * a);
        Assert.True(ess > 500, $"the ground truth's ESS {ess:F0} is too small");
        double combined = Math.Sqrt(smc.StandardError * smc.StandardError + se * se);
        Assert.True(Math.Abs(smc.Value - truth) < 4 * combined, $"SMC {smc.Value:F4} ± {smc.StandardError:F4}, truth {truth:F4} ± {se:F4} (ESS {ess:F0})");
        Assert.True(aligned.Exact.KlDivergence.Value > 0);
    }

    [Fact]
    public void TheFastTiltReportsItsDrift()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var network = sessions.Denoiser(model);
        var sampler = Sampler.Create("ddim", model.Config, steps: 30);
        var fast = KlAlignment.Run(network, null, sampler, Linear(), 1, new KlAlignmentSettings { Mode = KlTiltMode.Fast },
                                   new GenerationRequest { Count = 256, BatchSize = 256, Seed = 3 });
        Assert.Equal(KlAlgorithm.FastTilt, fast.Algorithm);
        Assert.NotNull(fast.Drift);
        Assert.NotNull(fast.Tilt);
        // The exact toy network's fast tilt is exact (DESIGN §1): the diagnostic must not flag it.
        Assert.False(fast.Drift!.IsDrifting);
    }

    private sealed class CapturingLogger : Microsoft.Extensions.Logging.ILogger
    {
        public readonly List<(Microsoft.Extensions.Logging.LogLevel Level, string Text)> Entries = [];
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;
        public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception,
                                Func<TState, Exception?, string> formatter) => Entries.Add((logLevel, formatter(state, exception)));
    }

    /// <summary>A budget too small for a strong tilt: the result says so, the logger hears it, and the CLI says the option as its flag.</summary>
    [Fact]
    public void AnUnderBudgetedExactTiltWarnsThroughTheLogger()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var network = sessions.Denoiser(model);
        var sampler = Sampler.Create("ddpm", model.Config, steps: 20);
        var logger = new CapturingLogger();
        var settings = new KlAlignmentSettings
        {
            Exact = new ExactTiltSettings { MaxParticlesPerSample = 1, TargetEssPerSample = 1, Smc = new SmcSettings { ParticlesPerSystem = 4 } },
            Logger = logger,
        };
        var run = KlAlignment.Run(network, null, sampler, Linear(), 0.05, settings, new GenerationRequest { Count = 32, BatchSize = 32, Seed = 2 });
        string warning = Assert.Single(run.Warnings, w => w.Contains("below the target"));
        Assert.Contains(logger.Entries, e => e.Level == Microsoft.Extensions.Logging.LogLevel.Warning && e.Text == warning);
        Assert.Contains(logger.Entries, e => e.Level == Microsoft.Extensions.Logging.LogLevel.Information && e.Text.StartsWith("exact tilt"));
        Assert.Contains("option 'ExactTiltSettings.MaxParticlesPerSample'", warning);
        Assert.Contains("--max-particles-per-sample", Cli.Flags.Describe(warning));
    }
}
