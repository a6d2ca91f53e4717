using System.CommandLine;
using OnnxAlign.Model;

namespace OnnxAlign.Cli;

/// <summary><c>onnxalign inspect MODEL</c>: inputs, outputs, schedule and prediction type, and a Stable-Diffusion-shaped model's other components.</summary>
internal static class InspectCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "A .onnx file with scheduler_config.json beside it, or a model folder (diffusers layout)." };
        var command = new Command("inspect", "Print a model's inputs, outputs, noise schedule and prediction type.") { model };
        var runtime = new RuntimeOptions();
        foreach (var option in runtime.All) command.Options.Add(option);
        command.SetAction(parse =>
        {
            var located = DiffusionModel.Locate(parse.GetValue(model)!);
            using var denoiser = located.OpenDenoiser(runtime.For(parse));
            var c = located.Config;
            var schedule = denoiser.Schedule;
            Console.WriteLine($"model      {located.OnnxPath}");
            Console.WriteLine($"config     {located.ConfigPath}");
            Console.WriteLine(denoiser.Describe());
            Console.WriteLine($"sample     [{string.Join(", ", denoiser.SampleShape)}] per sample, batch {(denoiser.FixedBatchSize is { } b ? $"fixed {b}" : "dynamic")}");
            Console.WriteLine($"scheduler  {c.ClassName}: {c.NumTrainTimesteps} steps, {(c.TrainedBetas is null ? $"{c.BetaSchedule} betas {c.BetaStart:g4}..{c.BetaEnd:g4}" : "trained betas")}");
            Console.WriteLine($"           prediction {c.PredictionType}, spacing {c.TimestepSpacing}, clip_sample {c.ClipSample}");
            Console.WriteLine($"           alpha_bar[0] = {schedule.AlphasCumprod[0]:g6}, alpha_bar[N-1] = {schedule.AlphasCumprod[^1]:g6}");
            var ort = Microsoft.ML.OnnxRuntime.OrtEnv.Instance();
            Console.WriteLine($"runtime    ONNX Runtime {ort.GetVersionString()}, providers {string.Join(", ", ort.GetAvailableProviders())}");
            if (c.IgnoredKeys.Count > 0) Console.WriteLine($"ignored    {string.Join(", ", c.IgnoredKeys)} (not used by OnnxAlign, as diffusers ignores them)");
            // The other components of a Stable-Diffusion-shaped folder (DESIGN §9).
            if (denoiser.ConditioningShape is { } conditioning)
                Console.WriteLine($"condition  encoder_hidden_states [batch, {conditioning.Length?.ToString() ?? "dynamic"}, {conditioning.Width?.ToString() ?? "dynamic"}]" +
                                  (located.TextEncoderPath is null ? " (no text encoder: give --encoder-hidden-states)" : ""));
            if (located.TextEncoderPath is not null)
            {
                using var encoder = located.OpenTextEncoder(runtime.For(parse) with { Device = "cpu" });
                Console.WriteLine($"text_encoder {located.TextEncoderPath}");
                Console.WriteLine(encoder.Describe());
                var tokenizer = encoder.Tokenizer;
                Console.WriteLine($"tokenizer  {located.TokenizerDirectory}: CLIP BPE, length {tokenizer.MaxLength}, start {tokenizer.StartId}, end {tokenizer.EndId}, pad {tokenizer.PadId}");
            }
            if (located.IsLatent)
            {
                using var vae = located.OpenVaeDecoder(denoiser.SampleShape, runtime.For(parse));
                Console.WriteLine($"vae_decoder {located.VaeDecoderPath}");
                Console.WriteLine(vae.Describe());
                Console.WriteLine($"latents    [{string.Join(", ", denoiser.SampleShape)}] → images [{string.Join(", ", vae.ImageShape)}], scaling_factor {vae.Config.ScalingFactor:G6} ({vae.Config.Source})");
            }
            return 0;
        });
        return command;
    }
}
