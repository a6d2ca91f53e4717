using Xunit.Sdk;
using OnnxAlign.ModelForge;
using OnnxAlign.Core;
using OnnxAlign.Estimation;
using OnnxAlign.Evaluation;
using OnnxAlign.Guidance;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Tests;

/// <summary>The exact linear tilt (DESIGN §1) against the closed-form tilted mixture.</summary>
public class TiltTests(ModelSessions sessions) : IClassFixture<ModelSessions>
{
    // Small: a gentle shift. Large: moves ~99.7 % of the mass to the 20 % component.
    public static readonly double[] SmallTheta = [0.5, 0.3];
    public static readonly double[] LargeTheta = [0.0, -3.0];

    public static TheoryData<string, int, bool> Cases()
    {
        var data = new TheoryData<string, int, bool>();
        foreach (var (sampler, steps) in new[] { ("ddpm", 250), ("ddpm", 500), ("ddim", 100), ("ddim", 200), ("euler-maruyama", 500), ("euler-maruyama", 1000), ("dpm++2m", 50), ("dpm++2m", 100) })
            foreach (bool large in new[] { false, true })
                data.Add(sampler, steps, large);
        return data;
    }

    private float[] TiltedSamples(string samplerName, int steps, double[] theta, int count = 4000, Func<double, double, double>? wrongShift = null)
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        var t = theta.Select(v => (float)v).ToArray();
        var tilt = wrongShift is null ? new LinearTilt(denoiser, t) : new LinearTilt(denoiser, t, TiltMode.Exact, null, wrongShift);
        return TestSupport.Generate(tilt, Sampler.Create(samplerName, model.Config, steps), count, seed: 21);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Gmm2dTiltMatchesTheClosedForm(string samplerName, int steps, bool large)
    {
        var theta = large ? LargeTheta : SmallTheta;
        var q = ToyModels.Gmm2d.Tilted(theta);
        var samples = TiltedSamples(samplerName, steps, theta);
        string label = $"{samplerName}/{steps}/θ={string.Join(",", theta)}";
        Moments.AssertMeanAndCovariance(samples, 2, q.Mean(), q.Covariance(), label);
        Moments.AssertComponentWeights(samples, ToyModels.Gmm2d, q.Weights, label);
    }

    [Fact]
    public void AWrongShiftFailsTheExactnessCheck()
    {
        // σ² instead of σ²/α: the tests above must be able to tell.
        var q = ToyModels.Gmm2d.Tilted(LargeTheta);
        var wrong = TiltedSamples("ddim", 100, LargeTheta, wrongShift: (alpha, sigma) => sigma * sigma);
        Assert.ThrowsAny<XunitException>(() => Moments.AssertMeanAndCovariance(wrong, 2, q.Mean(), q.Covariance(), "wrong shift"));
    }

    [Theory]
    [InlineData("ddim", 50)]
    [InlineData("dpm++2m", 25)]
    public void GmmImageTiltTowardTheMinorityPattern(string samplerName, int steps)
    {
        // θ along (ramp − square): the 10 % ramp component takes most of the mass.
        var mixture = ToyModels.GmmImage;
        var theta = mixture.Means[2].Zip(mixture.Means[0], (a, b) => 0.6 * (a - b)).ToArray();
        var q = mixture.Tilted(theta);
        Assert.True(q.Weights[2] > 0.5, $"test needs a strong tilt, got weight {q.Weights[2]}");
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm-image"));
        var denoiser = sessions.Denoiser(model);
        var tilt = new LinearTilt(denoiser, theta.Select(v => (float)v).ToArray());
        var samples = TestSupport.Generate(tilt, Sampler.Create(samplerName, model.Config, steps), 2000, seed: 8);
        Moments.AssertComponentWeights(samples, mixture, q.Weights, samplerName);
        Moments.AssertCoordinateMeans(samples, 64, q.Mean(), samplerName);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LogPartitionAndKlMatchTheClosedForm(bool large)
    {
        var theta = large ? LargeTheta : SmallTheta;
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        var stats = LogPartition.Estimate(denoiser, Sampler.Create("dpm++2m", model.Config, 50), theta.Select(v => (float)v).ToArray(),
                                          nodes: 10, samplesPerNode: 1000, seed: 4, batchSize: 1000);
        double logZ = ToyModels.Gmm2d.LogPartition(theta);
        var q = ToyModels.Gmm2d.Tilted(theta);
        double kl = theta.Zip(q.Mean(), (a, b) => a * b).Sum() - logZ;
        Assert.True(Math.Abs(stats.LogPartition.Value - logZ) <= Moments.Z * stats.LogPartition.StandardError,
            $"log Z = {stats.LogPartition.Value:F4} ± {stats.LogPartition.StandardError:F4}, exact {logZ:F4}");
        Assert.True(Math.Abs(stats.KlDivergence.Value - kl) <= Moments.Z * stats.KlDivergence.StandardError,
            $"KL = {stats.KlDivergence.Value:F4} ± {stats.KlDivergence.StandardError:F4}, exact {kl:F4}");
    }

    [Fact]
    public void GaussLegendreIsExactForPolynomialsOfDegreeTwoNMinusOne()
    {
        var (x, w) = LogPartition.GaussLegendre(5);
        for (int degree = 0; degree <= 9; degree++)
            Assert.Equal(1.0 / (degree + 1), x.Zip(w, (xi, wi) => wi * Math.Pow(xi, degree)).Sum(), 12);
    }

    [Fact]
    public void GuidanceApiMatchesTheDecoratorAndGivesTheShiftedDenoiser()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        float[] theta = [0.7f, -1.1f];
        float[] x = [0.3f, -0.2f, 1.5f, 2.5f];
        const int t = 600;
        var (alpha, sigma) = denoiser.Schedule.AlphaSigma(t);
        var expected = new float[4];
        new LinearTilt(denoiser, theta).PredictNoise(x, 2, t, expected);
        var guided = new float[4];
        var denoised = new float[4];
        LinearTilt.GuideNoise(x, 2, theta, alpha, sigma, (input, output) => denoiser.PredictNoise(input, 2, t, output), guided, denoised);
        Assert.Equal(expected, guided);
        // D^q(x) = D(x + c_t θ) (DESIGN §1)
        double c = sigma * sigma / alpha;
        var shifted = x.Select((v, i) => (float)(v + c * theta[i % 2])).ToArray();
        var baseNoise = new float[4];
        denoiser.PredictNoise(shifted, 2, t, baseNoise);
        var baseDenoised = new float[4];
        Prediction.DenoisedFromNoise(shifted, baseNoise, alpha, sigma, baseDenoised);
        for (int i = 0; i < 4; i++) Assert.Equal(baseDenoised[i], denoised[i], 3e-4);
    }

    [Fact]
    public void HybridSurrogateIsExactOnAGaussianBase()
    {
        // For p0 = N(m, v I) the surrogate of DESIGN §1b is the true tilted score, so a hybrid tilt that uses it on
        // every step (tiny trust radius) must reproduce q0 = N(m + vθ, v I).
        var gaussian = new GaussianMixture { Weights = [1.0], Means = [[1.0, -0.5]], Stds = [0.6] };
        string dir = TestSupport.TempDirectory();
        File.WriteAllBytes(Path.Combine(dir, "model.onnx"), ToyModels.GmmNetwork(gaussian, ToyModels.Gmm2dConfig, new GmmExport { SampleShape = [2] }));
        File.WriteAllText(Path.Combine(dir, "scheduler_config.json"), ToyModels.Gmm2dConfig);
        var model = DiffusionModel.Locate(dir);
        using var denoiser = model.OpenDenoiser();
        double[] theta = [2.0, 1.0];
        var tilt = new LinearTilt(denoiser, theta.Select(v => (float)v).ToArray(), TiltMode.Hybrid, new HybridSurrogate(0.36, TrustRadius: 1e-9));
        var samples = TestSupport.Generate(tilt, Sampler.Create("ddim", model.Config, 100), 4000, seed: 2);
        Assert.Equal(100 * 4000, tilt.SurrogateSteps);   // sample-steps: every sample, every step
        var q = gaussian.Tilted(theta);
        Moments.AssertMeanAndCovariance(samples, 2, q.Mean(), q.Covariance(), "hybrid on a Gaussian");
        Assert.Equal(1.0, new HybridSurrogate(0.36).Coefficient(1.0, 0.0), 12);  // Δ_t → θ as t → 0
    }
}
