using Xunit.Sdk;
using OnnxAlign.ModelForge;
using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Estimation;
using OnnxAlign.Guidance;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Tests;

/// <summary>
/// The exact tilt of DESIGN §1d on the exact toy. Its target is p·e^{⟨θ,x⟩} for p the law of the sampler at its step
/// count, so the ground truth is self-normalised importance weighting of 100 000 base samples of the same sampler
/// (DESIGN §1d: both refer to the same discretised base law); the closed-form tilt of the continuous-time mixture is
/// checked too, within the discretisation error. The SMC's weights must recover the target from proposals far from it
/// (a quarter of θ, 1.6 θ), so a wrong weight fails these tests.
/// </summary>
[Trait("Category", "Slow")]
public class ExactTiltTests(ModelSessions sessions) : IClassFixture<ModelSessions>
{
    private static readonly double[] Theta = TiltTests.LargeTheta;  // moves ~99.7 % of the mass to the 20 % component

    /// <summary>Continuous-time mixture vs a sampler's discretised law, tilted: DDPM with 200 steps differs by ≈ 0.035 in the mean.</summary>
    private const double DiscretisationTolerance = 0.06;

    private static readonly Dictionary<string, (double[] Mean, double[] Se, double LogZ, double LogZSe)> Truths = [];

    /// <summary>SNIS of base samples of the same sampler: E_q[x] and log Z = log mean e^{⟨θ,x⟩}, with standard errors.</summary>
    private (double[] Mean, double[] Se, double LogZ, double LogZSe) Truth(string samplerName, int steps) =>
        Truth($"{samplerName}/{steps}", config => Sampler.Create(samplerName, config, steps));

    private (double[] Mean, double[] Se, double LogZ, double LogZSe) Truth(string key, Func<SchedulerConfig, Sampler> sampler)
    {
        lock (Truths)
        {
            if (Truths.TryGetValue(key, out var cached)) return cached;
            var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
            var denoiser = sessions.Denoiser(model);
            // Its ESS (≈ 9 600 for DDPM/200) is over 4× the SMC's 2 048 particles: the combined standard error is ≈ 5 % above 200 000 samples'.
            const int n = 100_000;
            var samples = TestSupport.Generate(denoiser, sampler(model.Config), n, seed: 99, batch: 5000);
            var logWeights = Enumerable.Range(0, n).Select(i => Theta[0] * samples[2 * i] + Theta[1] * samples[2 * i + 1]).ToArray();
            var weights = WeightedSamples.Normalize(logWeights);
            var mean = new double[2];
            var se = new double[2];
            for (int j = 0; j < 2; j++)
                (mean[j], se[j]) = WeightedSamples.Mean(Enumerable.Range(0, n).Select(i => (double)samples[2 * i + j]).ToArray(), weights);
            var (logZ, logZSe) = WeightedSamples.LogMeanExp(logWeights);
            return Truths[key] = (mean, se, logZ, logZSe);
        }
    }

    private ExactTiltResult Run(string samplerName, int steps, double scale = 1.0, int systems = 8, int particles = 256)
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        var settings = new ExactTiltSettings
        {
            Count = 64, ProposalScale = scale, MinSystems = systems, TargetEssPerSample = 1e-9, MaxParticlesPerSample = 1,
            Smc = new SmcSettings { ParticlesPerSystem = particles, Seed = 17 },
        };
        return ExactTilt.Sample(denoiser, null, Sampler.Create(samplerName, model.Config, steps), Theta.Select(v => (float)v).ToArray(), settings);
    }

    /// <summary>The weighted mean against the ground truth of the same sampler (z ≤ 4.5 of the combined standard error)
    /// and against the closed form (within the discretisation tolerance).</summary>
    private void AssertTarget(WeightedParticles p, string samplerName, int steps, string label) =>
        AssertTarget(p, Truth(samplerName, steps), label, closedForm: true);

    private static void AssertTarget(WeightedParticles p, (double[] Mean, double[] Se, double LogZ, double LogZSe) truth, string label, bool closedForm)
    {
        var exact = ToyModels.Gmm2d.Tilted(Theta).Mean();
        for (int j = 0; j < 2; j++)
        {
            var values = Enumerable.Range(0, p.Count).Select(i => (double)p.Samples[i * 2 + j]).ToArray();
            var mean = p.Mean(values);
            double se = Math.Sqrt(mean.StandardError * mean.StandardError + truth.Se[j] * truth.Se[j]);
            Assert.True(Math.Abs(mean.Value - truth.Mean[j]) <= Moments.Z * se,
                $"{label}: coordinate {j}: {mean.Value:F4} ± {mean.StandardError:F4}, importance-weighted base samples {truth.Mean[j]:F4} ± {truth.Se[j]:F4}");
            if (closedForm)
                Assert.True(Math.Abs(mean.Value - exact[j]) <= DiscretisationTolerance + Moments.Z * mean.StandardError,
                    $"{label}: coordinate {j}: {mean.Value:F4}, closed form {exact[j]:F4}");
        }
    }

    /// <summary>The exact tilt by θ with <paramref name="sampler"/> on gmm2d: 8 systems of 256 particles.</summary>
    private ExactTiltResult RunWith(Sampler sampler, long seed)
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        return ExactTilt.Sample(denoiser, null, sampler, Theta.Select(v => (float)v).ToArray(), new ExactTiltSettings
        {
            Count = 64, MinSystems = 8, TargetEssPerSample = 1e-9, MaxParticlesPerSample = 1, Smc = new SmcSettings { ParticlesPerSystem = 256, Seed = seed },
        });
    }

    [Theory]
    [InlineData("ddpm", 200, 1.0)]
    [InlineData("ddpm", 200, 0.25)]
    [InlineData("euler-maruyama", 250, 0.25)]
    public void TwistedSmcMatchesTheClosedFormFromAFarProposal(string samplerName, int steps, double scale)
    {
        var q = ToyModels.Gmm2d.Tilted(Theta);
        var result = Run(samplerName, steps, scale: scale);
        var particles = result.Particles;
        Assert.Equal("twisted-smc", result.Method);
        string label = $"{samplerName}/{steps}, proposal {scale}·θ";
        AssertTarget(particles, samplerName, steps, label);
        AssertLogPartition(result, samplerName, steps, label);
        // The returned samples are draws of q: component weights of the resampled set.
        Moments.AssertComponentWeights(result.Samples, ToyModels.Gmm2d, q.Weights, label);
    }

    [Fact]
    public void TheNearlyDeterministicLastStepOfTrailingSpacingTakesTheBaseKernel()
    {
        // DDPM with trailing spacing ends at t > 0 and adds 10⁻¹⁰·z there (as diffusers does): a proposal step there would
        // have a transition ratio of ≈ 0 and leave one particle (seen on models/fashion-v: ESS 1). The base kernel keeps it exact.
        var config = DiffusionModel.Locate(TestSupport.Toy("gmm2d")).Config;
        static Sampler Trailing(SchedulerConfig c) => new DdpmSampler(c with { TimestepSpacing = TimestepSpacing.Trailing }, 100);
        var sampler = Trailing(config);
        Assert.InRange(sampler.NoiseScale(sampler.Steps - 1), 1e-12, TwistedSmc.MinimumGuidedNoiseScale);
        var result = RunWith(sampler, seed: 29);
        Assert.True(result.Particles.EffectiveSampleSize > 0.3 * result.Particles.Count, $"ESS {result.Particles.EffectiveSampleSize:F1} of {result.Particles.Count}");
        AssertTarget(result.Particles, Truth("ddpm/100/trailing", Trailing), "trailing DDPM", closedForm: false);
    }

    [Fact]
    public void TwistedSmcWithStochasticDdimMatchesItsGroundTruth()
    {
        // DDIM with η = 1 is stochastic: its steps are Gaussian with σ_η, so it takes the twisted SMC, not the noise-space one.
        static Sampler Ddim(SchedulerConfig c) => new DdimSampler(c, 100, eta: 1.0);
        var result = RunWith(Ddim(DiffusionModel.Locate(TestSupport.Toy("gmm2d")).Config), seed: 31);
        Assert.Equal("twisted-smc", result.Method);
        AssertTarget(result.Particles, Truth("ddim/100/eta1", Ddim), "DDIM η = 1", closedForm: false);
    }

    [Fact]
    public void TheProposalAloneIsFarFromTheTarget()
    {
        // The test above is not vacuous: the quarter tilt's own samples miss the target's mean by many standard errors.
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        var quarter = Theta.Select(v => (float)(v / 4)).ToArray();
        var samples = TestSupport.Generate(new LinearTilt(denoiser, quarter), Sampler.Create("ddpm", model.Config, 200), 2000, seed: 3);
        Assert.ThrowsAny<XunitException>(() => Moments.AssertCoordinateMeans(samples, 2, Truth("ddpm", 200).Mean, "quarter tilt"));
    }

    private void AssertLogPartition(ExactTiltResult result, string samplerName, int steps, string label)
    {
        var truth = Truth(samplerName, steps);
        double se = Math.Sqrt(result.LogPartition.StandardError * result.LogPartition.StandardError + truth.LogZSe * truth.LogZSe);
        Assert.True(Math.Abs(result.LogPartition.Value - truth.LogZ) <= Moments.Z * se,
            $"{label}: log Z {result.LogPartition.Value:F4} ± {result.LogPartition.StandardError:F4}, importance-weighted base samples {truth.LogZ:F4} ± {truth.LogZSe:F4}");
    }

    [Fact]
    public void PathWeightsCorrectAProposalOfTheWrongStrength()
    {
        // 1.6 θ: a tilt that samples another law (its own mean is off by ≈ 0.17); with the transition-density ratios in
        // the weights, the SMC still targets the tilt by θ of the sampler's law.
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        var theta = Theta.Select(v => (float)v).ToArray();
        var wrong = new LinearTilt(denoiser, theta.Select(v => 1.6f * v).ToArray());
        var sampler = Sampler.Create("ddpm", model.Config, 200);
        var own = TestSupport.Generate(wrong, sampler, 2000, seed: 3);
        Assert.ThrowsAny<XunitException>(() => Moments.AssertCoordinateMeans(own, 2, Truth("ddpm", 200).Mean, "the 1.6 θ proposal alone"));
        var smc = new TwistedSmc(denoiser, wrong, sampler, x => theta[0] * x[0] + theta[1] * x[1], new SmcSettings { ParticlesPerSystem = 256, Seed = 23 });
        var particles = ExactTilt.Combine(Enumerable.Range(0, 8).Select(b => smc.RunSystem(b)).ToArray(), 2);
        AssertTarget(particles, "ddpm", 200, "1.6 θ proposal, corrected");
    }

    [Theory]
    [InlineData("ddim", 50)]
    [InlineData("dpm++2m", 25)]
    public void NoiseSpaceSmcMatchesTheClosedFormForDeterministicSamplers(string samplerName, int steps)
    {
        var q = ToyModels.Gmm2d.Tilted(Theta);
        var result = Run(samplerName, steps, systems: 4, particles: 256);
        var particles = result.Particles;
        Assert.Equal("noise-space-smc", result.Method);
        AssertTarget(particles, samplerName, steps, samplerName);
        AssertLogPartition(result, samplerName, steps, samplerName);
        Moments.AssertComponentWeights(result.Samples, ToyModels.Gmm2d, q.Weights, samplerName);
    }

    [Fact]
    public void ResumedSystemsEqualAnUninterruptedRun()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        var sampler = Sampler.Create("ddpm", model.Config, 50);
        var theta = Theta.Select(v => (float)v).ToArray();
        var settings = new ExactTiltSettings { Count = 32, MinSystems = 4, Smc = new SmcSettings { ParticlesPerSystem = 16, Seed = 5 } };
        var whole = ExactTilt.Sample(denoiser, null, sampler, theta, settings);
        var store = new MemoryStore();
        var first = ExactTilt.Sample(denoiser, null, sampler, theta, settings with { MinSystems = 2, TargetEssPerSample = 1e-9 }, store: store);
        Assert.Equal(2, first.Particles.SystemSizes.Count);
        var resumed = ExactTilt.Sample(denoiser, null, sampler, theta, settings, store: store);
        Assert.Equal(whole.Samples, resumed.Samples);
        Assert.Equal(whole.LogPartition, resumed.LogPartition);
    }

    private sealed class MemoryStore : ISmcSystemStore
    {
        private readonly Dictionary<int, SmcSystem> _saved = [];
        public SmcSystem? TryLoad(int system, int particles, int sampleSize) => _saved.GetValueOrDefault(system);
        public void Save(int system, SmcSystem finished) => _saved[system] = finished;
    }

    [Fact]
    public void WeightedSampleHelpers()
    {
        // Systematic resampling: index i appears ⌊n·w_i⌋ or ⌈n·w_i⌉ times.
        double[] w = [0.5, 0.25, 0.125, 0.125];
        var picks = WeightedSamples.Systematic(w, 8, 0.3);
        Assert.Equal([0, 0, 0, 0, 1, 1, 2, 3], picks);
        Assert.Equal(4.0, WeightedSamples.EffectiveSampleSize([1, 1, 1, 1]), 12);
        Assert.Equal(1.0, WeightedSamples.EffectiveSampleSize([1, 0, 0, 0]), 12);
        var (value, _) = WeightedSamples.LogMeanExp([Math.Log(1), Math.Log(3)]);
        Assert.Equal(Math.Log(2), value, 12);
        Assert.Throws<ArgumentException>(() => WeightedSamples.Normalize([double.NaN, 0]));
    }
}

/// <summary><see cref="TwistedSmcParticles"/> driven by a caller's loop: the same system as <see cref="TwistedSmc.RunSystem"/>, and misuse refused.</summary>
public class TwistedSmcParticlesTests(ModelSessions sessions) : IClassFixture<ModelSessions>
{
    [Fact]
    public void ACallersLoopWithTheLibrarysDenoisersIsTwistedSmcBitForBit()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var network = sessions.Denoiser(model);
        var sampler = Sampler.Create("ddpm", model.Config, steps: 20);
        var theta = TiltTests.LargeTheta.Select(v => (float)v).ToArray();
        var (potential, proposalTheta) = ExactTilt.TiltTarget(theta, 0.5);
        var proposal = ExactTilt.FastTilt(network, proposalTheta, null);
        var settings = new SmcSettings { ParticlesPerSystem = 64, Seed = 5 };
        var expected = new TwistedSmc(network, proposal, sampler, potential, settings).RunSystem(3);

        var smc = new TwistedSmcParticles(sampler, potential, network.SampleSize, settings, system: 3);
        for (int i = 0; i < sampler.Steps; i++)
        {
            proposal.PredictNoise(smc.Particles, smc.Count, sampler.Timesteps[i], smc.ProposalNoise);
            network.PredictNoise(smc.Particles, smc.Count, sampler.Timesteps[i], smc.BaseNoise);
            smc.Step(i);
        }
        var system = smc.Finish();
        Assert.True(expected.Resamplings > 0);
        Assert.Equal(expected.Samples, system.Samples);
        Assert.Equal(expected.LogWeights, system.LogWeights);
        Assert.Equal(expected.LogNormalizer, system.LogNormalizer);
        Assert.Equal(expected.NetworkEvaluations, system.NetworkEvaluations);
        Assert.Equal(2L * 64 * 20, system.NetworkEvaluations);
    }

    /// <summary>A deterministic sampler in a caller's loop: the noise-space SMC over the caller's Φ is the library's.</summary>
    [Fact]
    public void NoiseSpaceSmcOverACallersPipelineIsTheLibrarysBitForBit()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var network = sessions.Denoiser(model);
        var sampler = Sampler.Create("ddim", model.Config, steps: 10);
        var (potential, _) = ExactTilt.TiltTarget(TiltTests.LargeTheta.Select(v => (float)v).ToArray(), 1);
        var settings = new SmcSettings { ParticlesPerSystem = 64, Seed = 5 };
        var expected = new NoiseSpaceSmc(network, sampler, potential, settings).RunSystem(2);

        // The caller's own loop: ε̂, then the sampler's loop-free step.
        NoiseMap pipeline = (noise, count, samples) =>
        {
            noise.CopyTo(samples);
            var x = samples.ToArray();
            var eps = new float[x.Length];
            var denoised = new float[x.Length];
            var state = sampler.CreateState(count, network.SampleSize);
            for (int i = 0; i < sampler.Steps; i++)
            {
                network.PredictNoise(x, count, sampler.Timesteps[i], eps);
                sampler.Step(i, eps, x, denoised, state, []);
            }
            x.CopyTo(samples);
        };
        var system = new NoiseSpaceSmc(pipeline, network.SampleSize, sampler.Steps, potential, settings).RunSystem(2);
        Assert.True(expected.Resamplings > 0);
        Assert.Equal(expected.Samples, system.Samples);
        Assert.Equal(expected.LogWeights, system.LogWeights);
        Assert.Equal(expected.LogNormalizer, system.LogNormalizer);
        Assert.Equal(expected.NetworkEvaluations, system.NetworkEvaluations);
    }

    /// <summary>A target whose G varies by ~10³⁰ over the particles: refused after the stalled stages (was ~10⁶ stages, a hang), naming the target.</summary>
    [Fact]
    public void ATargetNoTemperingCanReachIsRefusedNotCrawledTo()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var sampler = Sampler.Create("ddim", model.Config, steps: 5);
        var (potential, _) = ExactTilt.TiltTarget([1e30f, 0f], 1);
        var smc = new NoiseSpaceSmc(sessions.Denoiser(model), sampler, potential, new SmcSettings { ParticlesPerSystem = 16 });
        var e = Assert.Throws<ConfigException>(() => smc.RunSystem(0));
        Assert.Equal("target", e.Parameter);
        Assert.Contains("too strong", e.Message);
        Assert.True(smc.Trace.Count <= (NoiseSpaceSmc.StalledStageLimit + 1) * smc.MovesPerStage, $"{smc.Trace.Count} moves");
    }

    [Fact]
    public void StepsOutOfOrderAnEarlyFinishAndADeterministicSamplerAreRefused()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var sampler = Sampler.Create("ddpm", model.Config, steps: 3);
        BatchPotential zero = (_, values) => values.Clear();
        var smc = new TwistedSmcParticles(sampler, zero, 2, new SmcSettings { ParticlesPerSystem = 4 }, proposalIsBase: true);
        Assert.Throws<InvalidOperationException>(() => smc.Step(1));
        Assert.Throws<InvalidOperationException>(() => smc.Finish());
        for (int i = 0; i < 3; i++) smc.Step(i);               // ε̂ = 0: the base law's steps, no weight
        Assert.Throws<InvalidOperationException>(() => smc.Step(3));
        var system = smc.Finish();
        Assert.All(system.LogWeights, w => Assert.Equal(0, w));
        Assert.Equal(3L * 4, system.NetworkEvaluations);
        Assert.Throws<InvalidOperationException>(() => smc.Finish());
        Assert.Throws<ArgumentException>(() => new TwistedSmcParticles(Sampler.Create("ddim", model.Config, 3), zero, 2));
    }
}
