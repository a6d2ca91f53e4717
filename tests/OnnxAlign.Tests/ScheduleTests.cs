using OnnxAlign.Model;

namespace OnnxAlign.Tests;

public class ScheduleTests
{
    private static NoiseSchedule Schedule(string json) => new(SchedulerConfig.Parse(json, "test"));

    [Fact]
    public void LinearBetasAndCumulativeProducts()
    {
        var s = Schedule("""{"beta_start": 0.0001, "beta_end": 0.02, "num_train_timesteps": 1000}""");
        Assert.Equal(0.0001, s.BetaValues[0], 12);
        Assert.Equal(0.02, s.BetaValues[999], 12);
        Assert.Equal(0.0001 + 0.0199 * 500 / 999, s.BetaValues[500], 12);
        double product = 1;
        for (int t = 0; t <= 700; t++) product *= 1 - s.BetaValues[t];
        Assert.Equal(product, s.AlphasCumprod[700], 12);
        var (alpha, sigma) = s.AlphaSigma(700);
        Assert.Equal(1.0, alpha * alpha + sigma * sigma, 12);
    }

    [Fact]
    public void ScaledLinearAndCosineSchedules()
    {
        var scaled = Schedule("""{"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}""");
        Assert.Equal(0.00085, scaled.BetaValues[0], 10);
        double mid = Math.Sqrt(0.00085) + (Math.Sqrt(0.012) - Math.Sqrt(0.00085)) * 300 / 999;
        Assert.Equal(mid * mid, scaled.BetaValues[300], 12);

        var cosine = Schedule("""{"beta_schedule": "squaredcos_cap_v2"}""");
        // ᾱ_t = f((t+1)/N)/f(0) with f(u) = cos²((u + 0.008)/1.008 · π/2), until the 0.999 cap bites at the end.
        double F(double u) => Math.Pow(Math.Cos((u + 0.008) / 1.008 * Math.PI / 2), 2);
        Assert.Equal(F(500.0 / 1000) / F(0), cosine.AlphasCumprod[499], 10);
        Assert.Equal(0.999, cosine.BetaValues[999], 12);
    }

    [Fact]
    public void TrainedBetasOverrideTheSchedule()
    {
        var s = Schedule("""{"num_train_timesteps": 3, "trained_betas": [0.1, 0.2, 0.5]}""");
        Assert.Equal(0.9 * 0.8 * 0.5, s.AlphasCumprod[2], 12);
    }

    [Theory]
    [InlineData("leading", 0, 5, new[] { 800, 600, 400, 200, 0 })]
    [InlineData("leading", 1, 5, new[] { 801, 601, 401, 201, 1 })]          // diffusers test_steps_offset
    [InlineData("trailing", 0, 5, new[] { 999, 799, 599, 399, 199 })]
    [InlineData("linspace", 0, 4, new[] { 999, 666, 333, 0 })]
    [InlineData("trailing", 0, 3, new[] { 999, 666, 332 })]               // round(1000 − 333.33·k) − 1
    public void DdimFamilyTimesteps(string spacing, int offset, int steps, int[] expected)
    {
        var s = Schedule($$"""{"timestep_spacing": "{{spacing}}", "steps_offset": {{offset}}}""");
        Assert.Equal(expected, s.Timesteps(steps));
    }

    [Theory]
    [InlineData("linspace", 10, new[] { 999, 899, 799, 699, 599, 500, 400, 300, 200, 100 })] // 499.5 rounds to even
    [InlineData("leading", 4, new[] { 800, 600, 400, 200 })]
    public void MultistepTimesteps(string spacing, int steps, int[] expected)
    {
        var s = Schedule($$"""{"timestep_spacing": "{{spacing}}"}""");
        Assert.Equal(expected, s.MultistepTimesteps(steps));
    }

    [Fact]
    public void DdimVarianceMatchesDiffusersReferenceValues()
    {
        // diffusers tests/schedulers/test_scheduler_ddim.py::test_variance
        var s = Schedule("""{"_class_name": "DDIMScheduler"}""");
        double Variance(int t, int prev) => (1 - s.AlphasCumprod[prev]) / (1 - s.AlphasCumprod[t]) * (1 - s.AlphasCumprod[t] / s.AlphasCumprod[prev]);
        AssertNear(0.14771, Variance(420, 400));
        AssertNear(0.32460, Variance(980, 960));
        AssertNear(0.00979, Variance(487, 486));
        AssertNear(0.02, Variance(999, 998));
    }

    // diffusers' own check: |expected − actual| < 1e-5
    private static void AssertNear(double expected, double actual) => Assert.True(Math.Abs(expected - actual) < 1e-5, $"{actual} vs {expected}");

    [Fact]
    public void NonIntegerTimestepsInterpolate()
    {
        var s = Schedule("{}");
        Assert.Equal((s.AlphasCumprod[10] + s.AlphasCumprod[11]) / 2, s.AlphaCumprod(10.5), 12);
        Assert.Throws<ArgumentOutOfRangeException>(() => s.AlphaCumprod(1000));
    }
}
