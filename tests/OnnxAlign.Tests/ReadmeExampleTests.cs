using OnnxAlign.Alignment;
using OnnxAlign.Guidance;
using OnnxAlign.Model;
using OnnxAlign.Rewards;
using OnnxAlign.Sampling;

namespace OnnxAlign.Tests;

/// <summary>The C# snippets of README ("Library example", "Guidance in your own pipeline"), on the toy image model, so they cannot drift from the code.</summary>
public class ReadmeExampleTests
{
    [Fact]
    public void LibraryExampleRuns()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm-image"));
        using var network = model.OpenDenoiser(new DenoiserOptions { Device = "cpu" });
        var sampler = Sampler.Create("ddpm", model.Config, steps: 50);
        var plain = Generation.Run(network, sampler, new GenerationRequest { Count = 64, BatchSize = 32, Seed = 7 });
        Assert.Equal(64 * 64, plain.Samples.Length);

        var brightness = RewardSpec.ParseLinear("brightness", network.SampleShape, model.Directory);
        var aligned = ExactTilt.Sample(network, model.DataRange, sampler, brightness.Tilt(lambda: 0.05),
            new ExactTiltSettings { Count = 64, Smc = new SmcSettings { Seed = 7 } });
        Assert.Equal(64 * 64, aligned.Samples.Length);
        Assert.True(aligned.Particles.EffectiveSampleSize > 1 && double.IsFinite(aligned.KlDivergence.Value));

        var fast = Generation.Run(ExactTilt.FastTilt(network, brightness.Tilt(lambda: 0.05), model.DataRange), sampler,
                                  new GenerationRequest { Count = 64, Seed = 7 });
        Assert.True(brightness.EvaluateBatch(fast.Samples).Average() > brightness.EvaluateBatch(plain.Samples).Average());
    }

    [Fact]
    public void OwnLoopExampleEqualsTheFastTiltThroughTheSampler()
    {
        var model = DiffusionModel.Locate(TestSupport.Toy("gmm-image"));
        using var network = model.OpenDenoiser();
        var sampler = Sampler.Create("ddpm", model.Config, steps: 30);
        var theta = RewardSpec.ParseLinear("brightness", network.SampleShape, model.Directory).Tilt(0.05);
        const int batch = 4;
        var streams = Enumerable.Range(0, batch).Select(i => new NoiseStream(3, i)).ToArray();
        var x = new float[batch * network.SampleSize];
        for (int b = 0; b < batch; b++) streams[b].NextGaussian(x.AsSpan(b * network.SampleSize, network.SampleSize));

        var state = sampler.CreateState(batch, network.SampleSize);
        var guided = new float[x.Length];
        var denoised = new float[x.Length];
        for (int i = 0; i < sampler.Steps; i++)
        {
            int t = sampler.Timesteps[i];
            var (alpha, sigma) = network.Schedule.AlphaSigma(t);
            LinearTilt.GuideNoise(x, batch, theta, alpha, sigma,
                (input, eps) => network.PredictNoise(input, batch, t, eps),
                guided, denoised, model.DataRange);
            sampler.Step(i, guided, x, denoised, state, streams);
        }

        var expected = Generation.Run(ExactTilt.FastTilt(network, theta, model.DataRange), sampler,
                                      new GenerationRequest { Count = batch, BatchSize = batch, Seed = 3 }).Samples;
        TestSupport.AssertClose(expected, x, 1e-4);
    }
}
