using OnnxAlign.Model;

namespace OnnxAlign.Guidance;

/// <summary>
/// A model opened for sampling with its conditioning (DESIGN §9): the UNet, the text encoder that encoded the prompts,
/// the conditioned law samplers run (<see cref="Denoiser"/>), and for a latent model the VAE decoder that turns the
/// samples (latents) into images. For an unconditional pixel model it is the network alone.
/// </summary>
/// <remarks>Owns every session it opened; dispose it.</remarks>
public sealed class ConditionedModel : IDisposable
{
    private ConditionedModel(OnnxDenoiser network, TextEncoder? textEncoder, VaeDecoder? decoder, ConditionedLaw law)
    {
        Network = network;
        TextEncoder = textEncoder;
        Decoder = decoder;
        Law = law;
    }

    /// <summary>
    /// Opens <paramref name="model"/>'s networks and conditions the UNet: prompts through the text encoder (the empty
    /// prompt when none is given and the model has one), or the given hidden states, with classifier-free guidance when
    /// the scale is not 1.
    /// </summary>
    /// <exception cref="Core.ConfigException">A network that cannot be used, or conditioning it cannot take (the message names the parameter).</exception>
    public static ConditionedModel Open(DiffusionModel model, ConditioningOptions? conditioning = null, DenoiserOptions? options = null)
    {
        options ??= new DenoiserOptions();
        conditioning ??= new ConditioningOptions();
        var network = model.OpenDenoiser(options);
        TextEncoder? textEncoder = null;
        VaeDecoder? decoder = null;
        try
        {
            // The text encoder runs on the CPU whatever the UNet's device: a handful of calls per run.
            bool needsEncoder = network.ConditioningShape is not null && model.TextEncoderPath is not null && conditioning.EncoderHiddenStates is not { Count: 2 };
            if (needsEncoder) textEncoder = model.OpenTextEncoder(options with { Device = "cpu", SampleShape = null });
            var law = PromptConditioning.Create(network, conditioning, textEncoder);
            if (model.IsLatent) decoder = model.OpenVaeDecoder(network.SampleShape, options with { SampleShape = null });
            return new ConditionedModel(network, textEncoder, decoder, law);
        }
        catch
        {
            decoder?.Dispose();
            textEncoder?.Dispose();
            network.Dispose();
            throw;
        }
    }

    /// <summary>The UNet (the base network).</summary>
    public OnnxDenoiser Network { get; }

    /// <summary>The text encoder, when the model has one and it was needed.</summary>
    public TextEncoder? TextEncoder { get; }

    /// <summary>The VAE decoder of a latent model; null for a pixel model.</summary>
    public VaeDecoder? Decoder { get; }

    /// <summary>The conditioned law and what it was made of.</summary>
    public ConditionedLaw Law { get; }

    /// <summary>The law samplers run: the network, conditioned, guided.</summary>
    public IDenoiser Denoiser => Law.Denoiser;

    /// <summary>Shape of one output image or sample: the decoder's image shape, or the network's sample shape.</summary>
    public IReadOnlyList<int> OutputShape => Decoder?.ImageShape ?? Network.SampleShape;

    /// <summary>The outputs of <paramref name="count"/> samples: decoded images of a latent model, the samples themselves otherwise.</summary>
    public float[] Decode(float[] samples, int count, CancellationToken cancellation = default) =>
        Decoder is null ? samples : Decoder.Decode(samples, count, cancellation);

    /// <summary>
    /// Runs one sample through the conditioned law at the last training timestep: a network that loads but cannot run
    /// with this conditioning is found before anything is written.
    /// </summary>
    public void Probe()
    {
        int size = Denoiser.SampleSize;
        Denoiser.PredictNoise(new float[size], 1, Network.Schedule.Config.NumTrainTimesteps - 1, new float[size]);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Decoder?.Dispose();
        TextEncoder?.Dispose();
        Network.Dispose();
    }
}
