using OnnxAlign.Evaluation;
using OnnxAlign.Model;
using OnnxAlign.Sampling;
using OnnxAlign.ModelForge;

namespace OnnxAlign.Tests;

/// <summary>Each sampler on the exact mixture networks reproduces the mixture's moments and component weights.</summary>
public class SamplerStatisticsTests(ModelSessions sessions) : IClassFixture<ModelSessions>
{
    public static TheoryData<string, int> Samplers => new()
    {
        { "ddpm", 250 }, { "ddim", 100 }, { "euler-maruyama", 500 }, { "dpm++2m", 50 },
    };

    [Theory]
    [MemberData(nameof(Samplers))]
    public void Gmm2dMomentsAndWeights(string samplerName, int steps)
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        var denoiser = sessions.Denoiser(model);
        var mixture = GaussianMixture.Load(Path.Combine(model.Directory, "mixture.json"));
        var samples = TestSupport.Generate(denoiser, Sampler.Create(samplerName, model.Config, steps), 4000, seed: 11);
        Moments.AssertMeanAndCovariance(samples, 2, mixture.Mean(), mixture.Covariance(), samplerName);
        Moments.AssertComponentWeights(samples, mixture, mixture.Weights, samplerName);
    }

    [Theory]
    [InlineData("ddim", 50)]
    [InlineData("dpm++2m", 25)]
    public void GmmImageVPredictionScalarTimestep(string samplerName, int steps)
    {
        // gmm-image: diffusers folder layout, v-prediction, float scalar timestep, [B,1,8,8] samples.
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm-image"));
        var denoiser = sessions.Denoiser(model);
        Assert.Equal([1, 8, 8], denoiser.SampleShape);
        var mixture = GaussianMixture.Load(Path.Combine(model.Directory, "mixture.json"));
        var samples = TestSupport.Generate(denoiser, Sampler.Create(samplerName, model.Config, steps), 2000, seed: 5);
        Moments.AssertComponentWeights(samples, mixture, mixture.Weights, samplerName);
        Moments.AssertCoordinateMeans(samples, 64, mixture.Mean(), samplerName);
    }

    [Theory]
    [InlineData(PredictionType.Sample)]
    [InlineData(PredictionType.VPrediction)]
    public void PredictionTypesGiveTheSameSamples(PredictionType type)
    {
        // The same mixture exported as an x0- or v-network must give DDIM the same ε̂ (DESIGN §0 conversions).
        string dir = TestSupport.TempDirectory();
        string typeName = type == PredictionType.Sample ? "sample" : "v_prediction";
        string config = ToyModels.Gmm2dConfig.Replace("\"epsilon\"", $"\"{typeName}\"");
        File.WriteAllBytes(Path.Combine(dir, "model.onnx"), ToyModels.GmmNetwork(ToyModels.Gmm2d, config, new GmmExport { SampleShape = [2], Prediction = type }));
        File.WriteAllText(Path.Combine(dir, "scheduler_config.json"), config);
        var other = DiffusionModel.Locate(dir);
        var reference = DiffusionModel.Locate(TestSupport.Toy("gmm2d"));
        using var a = other.OpenDenoiser();
        var b = sessions.Denoiser(reference);
        var x = TestSupport.Generate(a, Sampler.Create("ddim", other.Config, 20), 64);
        var y = TestSupport.Generate(b, Sampler.Create("ddim", reference.Config, 20), 64);
        for (int i = 0; i < x.Length; i++) Assert.True(Math.Abs(x[i] - y[i]) <= 2e-3 * (1 + Math.Abs(y[i])), $"{i}: {x[i]} vs {y[i]}");
    }
}
