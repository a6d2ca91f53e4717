using OnnxAlign.Core;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Tests;

public class ConfigTests
{
    [Fact]
    public void DefaultsFollowTheNamedDiffusersClass()
    {
        var ddim = SchedulerConfig.Parse("""{"_class_name": "DDIMScheduler"}""", "t");
        Assert.True(ddim.ClipSample);
        Assert.True(ddim.SetAlphaToOne);
        Assert.Equal(TimestepSpacing.Leading, ddim.TimestepSpacing);

        var dpm = SchedulerConfig.Parse("""{"_class_name": "DPMSolverMultistepScheduler"}""", "t");
        Assert.False(dpm.ClipSample);
        Assert.Equal(TimestepSpacing.Linspace, dpm.TimestepSpacing);
        Assert.Equal("zero", dpm.FinalSigmasType);
        Assert.True(dpm.LowerOrderFinal);

        var pndm = SchedulerConfig.Parse("""{"_class_name": "PNDMScheduler", "skip_prk_steps": true}""", "t");
        Assert.False(pndm.SetAlphaToOne);
        Assert.Equal(["skip_prk_steps"], pndm.IgnoredKeys);
    }

    [Fact]
    public void ExplicitKeysWinOverAnotherClassDefaults()
    {
        var config = SchedulerConfig.Parse("""{"_class_name": "DPMSolverMultistepScheduler", "timestep_spacing": "trailing"}""", "t");
        var asDdim = config.WithDefaultsOf("DDIMScheduler");
        Assert.Equal(TimestepSpacing.Trailing, asDdim.TimestepSpacing);  // explicit in the file
        Assert.True(asDdim.ClipSample);                                  // DDIM's default, as DDIMScheduler.from_config gives
    }

    [Fact]
    public void UnknownKeysAreIgnoredAndListedLegacyKeysAccepted()
    {
        var c = SchedulerConfig.Parse("""{"_diffusers_version": "0.8.0", "skip_prk_steps": true, "timesteps": 500, "tensor_format": "pt"}""", "t");
        Assert.Equal(500, c.NumTrainTimesteps);
        Assert.Equal(["_diffusers_version", "skip_prk_steps", "tensor_format"], c.IgnoredKeys);
    }

    [Theory]
    [InlineData("""{"thresholding": true}""", "thresholding")]
    [InlineData("""{"beta_schedule": "sigmoid"}""", "beta_schedule 'sigmoid'")]
    [InlineData("""{"prediction_type": "noise"}""", "prediction_type 'noise'")]
    [InlineData("""{"variance_type": "learned_range"}""", "variance_type")]
    [InlineData("""{"timestep_spacing": "karras"}""", "timestep_spacing")]
    [InlineData("""{"use_karras_sigmas": true}""", "use_karras_sigmas")]
    [InlineData("""{"num_train_timesteps": "many"}""", "num_train_timesteps")]
    [InlineData("""{"beta_end": "0.02"}""", "key 'beta_end' expects a number")]
    [InlineData("""{"num_train_timesteps": 10.5}""", "num_train_timesteps")]
    [InlineData("""{"beta_start": 0.02, "beta_end": 0.01}""", "beta_start < beta_end")]
    [InlineData("""{"num_train_timesteps": 3, "trained_betas": [0.1]}""", "trained_betas")]
    [InlineData("""{"num_train_timesteps": 3, "trained_betas": [0.1, -0.01, 0.2]}""", "trained_betas[1] is -0.01")]
    [InlineData("""{"num_train_timesteps": 2, "trained_betas": [0.1, 1]}""", "trained_betas[1] is 1")]
    [InlineData("""{"algorithm_type": "sde-dpmsolver++"}""", "algorithm_type")]
    [InlineData("""{"beta_start": 0.1, "beta_start": 0.2}""", "beta_start")]
    [InlineData("""{"_class_name": "FooScheduler"}""", "_class_name 'FooScheduler'")]
    [InlineData("""{"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3}""", "solver_order=3")]
    [InlineData("""{"num_train_timesteps": 2147483647}""", "num_train_timesteps must lie in")]
    [InlineData("""{"num_train_timesteps": 1000, "steps_offset": 1000}""", "steps_offset must lie in")]
    [InlineData("""[1, 2]""", "JSON object")]
    [InlineData("""{"beta_start": """, "not valid JSON")]
    public void ValuesThatCannotBeHonouredAreClearErrors(string json, string mentioned)
    {
        var e = Assert.Throws<ConfigException>(() => SchedulerConfig.Parse(json, "cfg.json"));
        Assert.Contains("cfg.json", e.Message);
        Assert.Contains(mentioned, e.Message);
    }

    [Fact]
    public void AStepsOffsetThatLeavesTheScheduleIsRefusedWhenTheStepsAreKnown()
    {
        var config = SchedulerConfig.Parse("""{"num_train_timesteps": 1000, "steps_offset": 990}""", "test");
        var e = Assert.Throws<ConfigException>(() => Sampler.Create("ddim", config, 10));
        Assert.Contains("steps_offset 990", e.Message);
    }
}
