using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Tests;

/// <summary>
/// Full loops against diffusers' published scheduler tests: the dummy network ε̂ = x·t/(t+1) (its output read in the
/// config's prediction type) from the deterministic start s[b,c,h,w] = (((c·8+h)·8+w)·4+b)/768, shape 4×3×8×8.
/// </summary>
public class ParityTests
{
    private sealed class DummyNetwork(SchedulerConfig config) : IDenoiser
    {
        public IReadOnlyList<int> SampleShape => [3, 8, 8];
        public int SampleSize => 192;
        public NoiseSchedule Schedule { get; } = new(config);

        public void PredictNoise(ReadOnlySpan<float> x, int batchSize, double timestep, Span<float> noise)
        {
            for (int i = 0; i < x.Length; i++) noise[i] = (float)(x[i] * timestep / (timestep + 1));
            var (alpha, sigma) = Schedule.AlphaSigma(timestep);
            Prediction.ToNoise(Schedule.Config.PredictionType, x, noise, alpha, sigma);
        }
    }

    private static float[] DeterministicSample()
    {
        var s = new float[4 * 192];
        for (int b = 0; b < 4; b++)
            for (int c = 0; c < 3; c++)
                for (int h = 0; h < 8; h++)
                    for (int w = 0; w < 8; w++)
                        s[b * 192 + (c * 8 + h) * 8 + w] = (((c * 8 + h) * 8 + w) * 4 + b) / 768f;
        return s;
    }

    private static float[] FullLoop(string sampler, string json, int steps = 10, double eta = 0)
    {
        var config = SchedulerConfig.Parse(json, "test");
        var x = DeterministicSample();
        var streams = Enumerable.Range(0, 4).Select(i => new NoiseStream(0, i)).ToArray();
        Sampler.Create(sampler, config, steps, eta).Sample(new DummyNetwork(config), x, 4, streams);
        return x;
    }

    private static double AbsSum(float[] x) => x.Sum(v => Math.Abs((double)v));

    [Theory]
    [InlineData("epsilon", 0.0001, true, 172.0067)]       // test_full_loop_no_noise
    [InlineData("v_prediction", 0.0001, true, 52.5302)]   // test_full_loop_with_v_prediction
    [InlineData("epsilon", 0.01, true, 149.8295)]         // test_full_loop_with_set_alpha_to_one
    [InlineData("epsilon", 0.01, false, 149.0784)]        // test_full_loop_with_no_set_alpha_to_one
    public void DdimMatchesDiffusers(string prediction, double betaStart, bool setAlphaToOne, double expectedAbsSum)
    {
        string json = $$"""
            {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": {{betaStart}}, "beta_end": 0.02,
             "beta_schedule": "linear", "clip_sample": true, "prediction_type": "{{prediction}}", "set_alpha_to_one": {{(setAlphaToOne ? "true" : "false")}}}
            """;
        var x = FullLoop("ddim", json);
        Assert.True(Math.Abs(AbsSum(x) - expectedAbsSum) <= 1e-4 * expectedAbsSum, $"sum |x| = {AbsSum(x):F4}, diffusers {expectedAbsSum}");
    }

    private const string DpmBase = """
        "num_train_timesteps": 1000, "_class_name": "DPMSolverMultistepScheduler", "beta_start": 0.0001, "beta_end": 0.02,
        "beta_schedule": "linear", "solver_order": 2, "algorithm_type": "dpmsolver++",
        "lower_order_final": false, "euler_at_final": false
        """;

    [Theory]
    [InlineData("epsilon", 0.3301)]       // test_full_loop_no_noise
    [InlineData("v_prediction", 0.2251)]  // test_full_loop_with_v_prediction
    public void DpmSolverPlusPlusMatchesDiffusers(string prediction, double expectedAbsMean)
    {
        var x = FullLoop("dpm++2m", "{" + DpmBase + $", \"final_sigmas_type\": \"sigma_min\", \"prediction_type\": \"{prediction}\"}}");
        double mean = AbsSum(x) / x.Length;
        // diffusers publishes 4 digits (its own tolerance 1e-3); the rounding is the limit of this comparison.
        Assert.True(Math.Abs(mean - expectedAbsMean) <= 5e-5 + 1e-4 * expectedAbsMean, $"mean |x| = {mean:F6}, diffusers {expectedAbsMean}");
    }

    [Fact]
    public void DdpmEqualsDdimWithEtaOneOnTheSameNoise()
    {
        // DDIM's η = 1 step has DDPM's posterior mean and variance (Song et al. 2021, §4.1); with the same streams and
        // leading spacing the two full loops must agree to float rounding.
        const string json = """{"clip_sample": false, "set_alpha_to_one": true}""";
        var ddpm = FullLoop("ddpm", json, steps: 20);
        var ddim = FullLoop("ddim", json, steps: 20, eta: 1.0);
        for (int i = 0; i < ddpm.Length; i++) Assert.True(Math.Abs(ddpm[i] - ddim[i]) <= 1e-4 * (1 + Math.Abs(ddim[i])), $"index {i}: {ddpm[i]} vs {ddim[i]}");
    }

    [Fact]
    public void DpmSolverHeunAndZeroFinalSigmaDiffer()
    {
        // The solver_type and final_sigmas_type keys must change the result (they are read, not ignored).
        var midpoint = FullLoop("dpm++2m", "{" + DpmBase + ", \"solver_type\": \"midpoint\", \"final_sigmas_type\": \"sigma_min\"}");
        var heun = FullLoop("dpm++2m", "{" + DpmBase + ", \"solver_type\": \"heun\", \"final_sigmas_type\": \"sigma_min\"}");
        var zero = FullLoop("dpm++2m", "{" + DpmBase + ", \"solver_type\": \"midpoint\", \"final_sigmas_type\": \"zero\"}");
        Assert.NotEqual(AbsSum(midpoint), AbsSum(heun), 3);
        Assert.NotEqual(AbsSum(midpoint), AbsSum(zero), 3);
    }
}
